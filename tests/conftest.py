"""Shared fixtures: the real data in ../shared/data (skipped cleanly when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDDX_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def pytest_sessionstart(session: pytest.Session) -> None:
    """The demo fixture RUN's ood.npz is fitted on first use (tests/fixture_runs.py), not kept in git; tests and the
    hostile harness read that RUN in place."""
    from tests.fixture_runs import ensure_demo_ood

    ensure_demo_ood()


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """Preprocessing and frame caches go to a temporary folder, not the user's ~/.cache/meddx (unless
    MEDDX_CACHE is set by the caller)."""
    if "MEDDX_CACHE" in os.environ:
        yield
        return
    os.environ["MEDDX_CACHE"] = str(tmp_path_factory.mktemp("meddx-cache"))
    try:
        yield
    finally:
        os.environ.pop("MEDDX_CACHE", None)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; skips the test when the real data is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ct_dir(shared_data) -> Path:
    """The real abdominal CT series (3D-IRCADb, DICOM); skips the test when it is absent."""
    return require(shared_data / "dicom" / "ct_abdomen_ircadb")


def require(path: Path) -> Path:
    """Skip unless this particular real-data path exists."""
    if not path.exists():
        pytest.skip(f"real data {path} is absent")
    return path


@pytest.fixture(autouse=True)
def _meddx_logger_propagates():
    """`meddx.cli.main`, which many tests call in-process, makes the `meddx` logger print itself and stop
    propagating; `caplog` listens on the root logger. Each test starts with the CLI's handlers removed and
    propagation on, so log assertions do not depend on which test ran before."""
    import logging

    logger = logging.getLogger("meddx")
    for handler in [h for h in logger.handlers if getattr(h, "_meddx_cli", False)]:
        logger.removeHandler(handler)
    logger.propagate = True
    yield
