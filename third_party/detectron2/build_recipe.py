"""
PEP 517 build backend that turns the pinned Detectron2 v0.6 source into a patched, pure-Python
wheel, the way a distribution builds a package from upstream source plus its own patch series.

Steps (all in a temporary directory; nothing in this folder is modified):
  1. fetch the sdist ``pb1-detectron2-0.6.tar.gz`` (or take ``$PANOPTIC_ZOO_DETECTRON2_SDIST``),
     and refuse it unless its sha256 is the pinned one;
  2. unpack it and apply ``patches/series`` in order with ``git apply`` (or ``patch -p1``);
  3. put this folder's ``[project]`` table (name, version, dependencies) in a ``pyproject.toml``
     next to the patched ``setup.py`` and let setuptools build the wheel (or sdist).

Downloaded sdists are cached in ``$PANOPTIC_ZOO_CACHE`` (default ``~/.cache/panoptic_zoo``)/sdists.
"""

import contextlib
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from setuptools import build_meta as _setuptools

RECIPE_DIR = Path(__file__).resolve().parent
SDIST_FILENAME = "pb1-detectron2-0.6.tar.gz"
SDIST_URL = (
    "https://files.pythonhosted.org/packages/60/26/"
    "48f5bbb7ee492696a21da23303daeecdfe3942c498a70d34108acf63b2bd/pb1-detectron2-0.6.tar.gz"
)
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"


_SETUPTOOLS_BUILD_SYSTEM = """[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

"""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verified(path: Path) -> Path:
    actual = _sha256(path)
    if actual != SDIST_SHA256:
        raise RuntimeError(
            f"{path}: sha256 {actual} does not match the pinned {SDIST_SHA256} of "
            f"{SDIST_FILENAME}; refusing to build from it. Delete the file (or fix "
            "$PANOPTIC_ZOO_DETECTRON2_SDIST) and build again."
        )
    return path


def _fetch_sdist() -> Path:
    local = os.environ.get("PANOPTIC_ZOO_DETECTRON2_SDIST")
    if local:
        if not Path(local).is_file():
            raise FileNotFoundError(
                f"$PANOPTIC_ZOO_DETECTRON2_SDIST={local} is not a file; point it at "
                f"{SDIST_FILENAME} or unset it to download from PyPI."
            )
        return _verified(Path(local))
    cache_root = os.environ.get("PANOPTIC_ZOO_CACHE") or Path.home() / ".cache" / "panoptic_zoo"
    cache_dir = Path(cache_root) / "sdists"
    cached = cache_dir / SDIST_FILENAME
    if cached.is_file() and _sha256(cached) == SDIST_SHA256:
        return cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Download next to the final name and rename only once verified, so an interrupted or
    # tampered download never becomes the cached copy.
    fd, partial = tempfile.mkstemp(dir=cache_dir, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(SDIST_URL, timeout=120) as resp:
            shutil.copyfileobj(resp, out)
        _verified(Path(partial))
        os.replace(partial, cached)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return cached


def _apply_patch(patch: Path, tree: Path) -> None:
    # GIT_CEILING_DIRECTORIES keeps git from treating an enclosing repository as the target.
    env = dict(os.environ, GIT_CEILING_DIRECTORIES=str(tree.parent))
    if shutil.which("git"):
        cmd = ["git", "apply", "--whitespace=nowarn", str(patch)]
    elif shutil.which("patch"):
        cmd = ["patch", "-p1", "--forward", "--batch", "-i", str(patch)]
    else:
        raise RuntimeError("building detectron2 needs `git` or `patch` to apply its patch series")
    result = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"patch {patch.name} does not apply:\n{result.stdout}{result.stderr}")


def _prepare_tree(workdir: Path) -> Path:
    with tarfile.open(_fetch_sdist()) as tar:
        tar.extractall(workdir, filter="data")
    tree = workdir / SDIST_FILENAME[: -len(".tar.gz")]
    series = (RECIPE_DIR / "patches" / "series").read_text().split()
    for name in series:
        _apply_patch(RECIPE_DIR / "patches" / name, tree)
    # The recipe's pyproject.toml carries the metadata; in the patched tree the build itself is
    # plain setuptools (so an sdist of that tree builds anywhere without this recipe).
    recipe = (RECIPE_DIR / "pyproject.toml").read_text()
    project = recipe[recipe.index("[project]") :]
    (tree / "pyproject.toml").write_text(_SETUPTOOLS_BUILD_SYSTEM + project)
    # The sdist's egg-info describes the unpatched package; setuptools must not reuse it.
    shutil.rmtree(tree / "pb1_detectron2.egg-info", ignore_errors=True)
    return tree


@contextlib.contextmanager
def _in_patched_tree():
    with tempfile.TemporaryDirectory(prefix="pb1-detectron2-build-") as workdir:
        tree = _prepare_tree(Path(workdir))
        previous = os.getcwd()
        os.chdir(tree)
        try:
            yield tree
        finally:
            os.chdir(previous)


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    with _in_patched_tree():
        return _setuptools.prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    wheel_directory = os.path.abspath(wheel_directory)
    with _in_patched_tree():
        return _setuptools.build_wheel(wheel_directory, config_settings)


def build_sdist(sdist_directory, config_settings=None):
    """The patched source as an sdist (upstream files with the patch series applied)."""
    sdist_directory = os.path.abspath(sdist_directory)
    with _in_patched_tree():
        return _setuptools.build_sdist(sdist_directory, config_settings)
