"""Install mmseg-epsam: ``pip install -e .`` (tools/setup_env.sh does it for you)."""
from setuptools import find_packages, setup

setup(
    name='mmseg-epsam',
    version='0.1.0',
    description='EP-SAM weakly supervised histopathology segmentation as an MMSegmentation plugin',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=['mmseg_epsam', 'mmseg_epsam.*']),
    # The full pins live in requirements.txt (mmcv must be the compiled build made by
    # tools/setup_env.sh); here only what a plugin import needs.
    install_requires=['mmengine', 'mmcv>=2.0.0,<2.2.0', 'mmsegmentation>=1.2',
                      'segment-anything', 'openslide-python', 'tifffile'],
)
