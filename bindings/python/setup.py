"""Build the monlight package: the Python layer plus the engine compiled by cffi.

The engine's C sources must sit in ``_engine/`` beside this file. Inside
the monlight repository they are copied there from ``../../core`` on every
run (only changed files, with their timestamps, so that an up-to-date
extension is not rebuilt). An unpacked sdist has no ``../../core`` and
builds from the ``_engine/`` copy it carries. Metadata lives in
pyproject.toml; this file only adds the cffi module and the copy step.
"""

import filecmp
import shutil
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent
REPOSITORY_CORE = HERE.parent.parent / "core"
ENGINE_COPY = HERE / "_engine"
ENGINE_PARTS = ("include", "src")


def sync_engine_sources() -> None:
    """Mirror core/include and core/src into _engine/, deleting files that core no longer has."""
    if not (REPOSITORY_CORE / "include" / "monlight.h").is_file():
        return  # not in the repository: use the _engine/ copy from the sdist
    for part in ENGINE_PARTS:
        source_dir = REPOSITORY_CORE / part
        target_dir = ENGINE_COPY / part
        target_dir.mkdir(parents=True, exist_ok=True)
        wanted = {path.name for path in source_dir.iterdir() if path.suffix in (".c", ".h")}
        for name in wanted:
            source, target = source_dir / name, target_dir / name
            if not target.exists() or not filecmp.cmp(source, target, shallow=False):
                shutil.copy2(source, target)
        for stale in target_dir.iterdir():
            if stale.name not in wanted:
                stale.unlink()


sync_engine_sources()

# The record call, compiled as a plain CPython extension so that it holds
# the GIL (see monlight/_fastpath.c); everything else goes through cffi.
FASTPATH = Extension(
    "monlight._fastpath",
    sources=["monlight/_fastpath.c"],
    depends=["setup.py"],
    py_limited_api=True,  # the source defines Py_LIMITED_API for 3.10
    extra_compile_args=["-std=c11"],
)

setup(
    cffi_modules=["monlight/_build_native.py:ffibuilder"],
    ext_modules=[FASTPATH],
)
