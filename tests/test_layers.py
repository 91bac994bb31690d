"""The package's layers point one way (import-linter contracts in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# import-linter run by this interpreter (the one meddx is installed in), not whichever `lint-imports` is on PATH
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
        "sys.argv[0] = 'lint-imports'; sys.exit(lint_imports_command())"]


def _have_import_linter() -> bool:
    try:
        import importlinter  # noqa: F401
    except ImportError:
        return False
    return True


def test_import_contracts_hold() -> None:
    if not _have_import_linter():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    res = subprocess.run([*LINT, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


def test_a_violation_is_caught(tmp_path: Path) -> None:
    """The contract can fail: a copy of the package where io imports app breaks it."""
    if not _have_import_linter():
        pytest.skip("import-linter is not installed")
    pkg = tmp_path / "src" / "meddx"
    shutil.copytree(ROOT / "src" / "meddx", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "io" / "bad_upward.py").write_text("from meddx.app import common  # noqa: F401\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    res = subprocess.run([*LINT, "--config", str(tmp_path / "pyproject.toml")], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env={"PYTHONPATH": str(tmp_path / "src"), "PATH": "/usr/bin:/bin"})
    assert res.returncode != 0 and "BROKEN" in res.stdout, res.stdout[-2000:]


def test_import_meddx_is_cheap() -> None:
    """`import meddx; meddx.list_models()` loads neither TensorFlow nor Keras."""
    code = ("import sys, meddx; names = meddx.list_models(); assert 'cnn' in names and 'unet' in names; "
            "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; assert not bad, bad")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
