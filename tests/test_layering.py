"""Imports between the subpackages of mmseg_epsam point down the layers only.

The layers, lowest first (a subpackage may import its own modules and any lower layer, never
a module of its own layer or of a higher one):

    0  utils                         imports nothing of ours
    1  functional                    pure maths
    2  wsi, cache                    slide I/O; the image-embedding store
    3  datasets, models, evaluation  registered MMSeg components
    4  engine                        runner, hooks, CAM and pseudo-label generation
    5  apis                          the pipeline and the inferencers

The package root (``mmseg_epsam/__init__.py``) imports every subpackage to register it and is
exempt. The library imports nothing from ``tools``, ``tests`` or ``benchmarks``.
Imports inside functions count as much as module-level ones. The test reads the source with
:mod:`ast` and imports nothing.
"""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIR = REPO / 'mmseg_epsam'
LAYERS = dict(utils=0, functional=1, wsi=2, cache=2, datasets=3, models=3, evaluation=3,
              engine=4, apis=5)
OUTSIDE_LIBRARY = ('tools', 'tests', 'benchmarks')
# what a module of tools/, tests/ or benchmarks/ is importable as (they run as scripts or
# from their own folder on sys.path)
OUTSIDE_MODULES = set(OUTSIDE_LIBRARY) | {p.stem for folder in OUTSIDE_LIBRARY
                                          for p in (REPO / folder).rglob('*.py')}

# (importing module, imported module) pairs allowed to break the rule: none. An entry may
# only be added with a comment saying why, and it must stay current (see the last test).
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


def module_name(path: Path, package_dir: Path = PACKAGE_DIR) -> str:
    """Dotted name of a module file under the package (``pkg/__init__.py`` -> ``pkg``)."""
    parts = list(path.relative_to(package_dir.parent).with_suffix('').parts)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imported_modules(path: Path, package_dir: Path = PACKAGE_DIR) -> set:
    """Absolute dotted names of every module ``path`` imports (relative imports resolved)."""
    name = module_name(path, package_dir)
    package = name.split('.') if path.name == '__init__.py' else name.split('.')[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.add(node.module)
                continue
            base = package[:len(package) - node.level + 1]
            if node.module is not None:
                found.add('.'.join(base + [node.module]))
            else:  # ``from . import x``: x is a module of the package
                found.update('.'.join(base + [alias.name]) for alias in node.names)
    return found


def subpackage(module: str):
    """The first-level subpackage of a dotted ``mmseg_epsam`` name (None for the root)."""
    parts = module.split('.')
    return parts[1] if len(parts) > 1 else None


def library_modules() -> list:
    """Every ``.py`` file of the package."""
    return sorted(PACKAGE_DIR.rglob('*.py'))


def layering_violations() -> set:
    """(module, imported) pairs where a subpackage imports its own layer or a higher one."""
    violations = set()
    for path in library_modules():
        source = module_name(path)
        layer = subpackage(source)
        if layer is None:
            continue
        for target in imported_modules(path):
            if not target.startswith('mmseg_epsam'):
                continue
            other = subpackage(target)
            if other == layer:
                continue
            if other is None or LAYERS[other] >= LAYERS[layer]:
                violations.add((source, target))
    return violations


def test_every_subpackage_has_a_layer():
    found = {p.name for p in PACKAGE_DIR.iterdir()
             if p.is_dir() and (p / '__init__.py').is_file()}
    assert found == set(LAYERS), f'place new subpackages in LAYERS: {found ^ set(LAYERS)}'


def test_imports_point_down_the_layers():
    violations = layering_violations()
    new = sorted(violations - KNOWN_VIOLATIONS)
    assert not new, 'imports against the layering:\n' + '\n'.join(f'{a} -> {b}' for a, b in new)


def test_known_violations_are_still_current():
    """A fixed violation leaves the allow-list, so it cannot come back unnoticed."""
    gone = sorted(KNOWN_VIOLATIONS - layering_violations())
    assert not gone, 'remove from KNOWN_VIOLATIONS:\n' + '\n'.join(f'{a} -> {b}' for a, b in gone)


def test_library_imports_no_tools_tests_or_benchmarks():
    offending = sorted((module_name(path), target) for path in library_modules()
                       for target in imported_modules(path)
                       if target.split('.')[0] in OUTSIDE_MODULES)
    assert not offending, offending


@pytest.mark.parametrize('source, expected', [
    ('from ..engine.runner import EPSAMRunner', {'mmseg_epsam.engine.runner'}),
    ('from . import hooks', {'mmseg_epsam.wsi.hooks'}),
    ('from .tissue import tissue_mask', {'mmseg_epsam.wsi.tissue'}),
    ('import mmseg_epsam.apis as a', {'mmseg_epsam.apis'}),
    ('def f():\n    from ..apis import EPSAMPipeline', {'mmseg_epsam.apis'}),
    ('from ..engine import hooks, runner', {'mmseg_epsam.engine'}),
])
def test_imports_are_resolved(tmp_path, source, expected):
    """Relative and lazy imports are resolved against the importing module's package."""
    package = tmp_path / 'mmseg_epsam' / 'wsi'
    package.mkdir(parents=True)
    module = package / 'probe.py'
    module.write_text(source + '\n')
    assert imported_modules(module, tmp_path / 'mmseg_epsam') == expected
