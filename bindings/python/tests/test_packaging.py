"""Packaging: pip install, pip wheel and an sdist, each into a fresh virtual environment.

These tests build the extension from scratch with pip, which fetches
setuptools and cffi from the package index into its isolated build
environment (pip's cache makes later runs faster). Each step is bounded
by STEP_TIMEOUT.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import textwrap
import venv
from pathlib import Path

import pytest

from conftest import PACKAGE_DIR

pytestmark = pytest.mark.slow

STEP_TIMEOUT = 300  # seconds for one venv creation, build or install


def run(command: list[str], cwd: Path) -> str:
    """Run a command and return its output; fail the test with the output if it fails."""
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=STEP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(command)} did not finish within {STEP_TIMEOUT} s")
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed with status {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def fresh_python(directory: Path) -> Path:
    venv.create(directory, with_pip=True, clear=True)
    return directory / "bin" / "python"


# Runs inside the fresh environment: the installed package must send a
# metric on its own, and the fastapi extra must be what is missing.
CHECK_INSTALLED = textwrap.dedent("""
    import sys
    import monlight
    from monlight import MetricsClient
    assert "site-packages" in monlight._native.__file__, monlight._native.__file__
    client = MetricsClient(sys.argv[1], sys.argv[2])
    client.counter("installed_package", labels={"via": sys.argv[3]})
    client.flush()
    assert client.stats()["delivered"] == 1, client.stats()
    try:
        import monlight.integrations.fastapi
    except ImportError as exc:
        assert "pip install 'monlight[fastapi]'" in str(exc), exc
    else:
        raise AssertionError("the fastapi integration imported without FastAPI installed")
    print(monlight.__version__)
""")


def check_installed(python: Path, receiver, via: str, cwd: Path) -> None:
    output = run([str(python), "-c", CHECK_INSTALLED, receiver.url, receiver.api_key, via], cwd=cwd)
    assert output.strip() == "0.1.0"


def test_pip_install_and_wheel(receiver, tmp_path: Path) -> None:
    python = fresh_python(tmp_path / "venv")

    run([str(python), "-m", "pip", "install", "-q", str(PACKAGE_DIR)], cwd=tmp_path)
    check_installed(python, receiver, "pip install", cwd=tmp_path)
    requirements = run([str(python), "-c", "from importlib.metadata import requires; print(requires('monlight'))"],
                       cwd=tmp_path)
    assert requirements.strip() == """['cffi>=1.15', 'fastapi>=0.100; extra == "fastapi"']"""

    run([str(python), "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "wheels"), str(PACKAGE_DIR)],
        cwd=tmp_path)
    wheels = list((tmp_path / "wheels").glob("monlight-0.1.0-*.whl"))
    assert len(wheels) == 1

    assert [metric["labels"]["via"] for metric in receiver.metrics()] == ["pip install"]


def test_sdist_installs(receiver, tmp_path: Path) -> None:
    run([sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path / "dist"), str(PACKAGE_DIR)],
        cwd=tmp_path)
    (sdist,) = (tmp_path / "dist").glob("monlight-0.1.0.tar.gz")
    with tarfile.open(sdist) as archive:
        names = set(archive.getnames())
    assert "monlight-0.1.0/_engine/include/monlight.h" in names
    assert "monlight-0.1.0/_engine/src/metrics_client.c" in names
    assert "monlight-0.1.0/monlight/py.typed" in names
    assert not any(name.startswith("monlight-0.1.0/tests/") for name in names)

    # Installed from another directory, the sdist cannot reach the
    # repository's core/ and must build from its own copy.
    python = fresh_python(tmp_path / "venv")
    run([str(python), "-m", "pip", "install", "-q", str(sdist)], cwd=tmp_path)
    check_installed(python, receiver, "sdist", cwd=tmp_path)

    assert [metric["labels"]["via"] for metric in receiver.metrics()] == ["sdist"]
