"""The README's "From Python" snippet runs as written (on BreastMNIST from ../shared/data)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BREAST = ROOT.parent / "shared" / "data" / "medmnist" / "breastmnist_trainval.npz"


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## From Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_from_python_snippet_runs(tmp_path: Path) -> None:
    if not BREAST.is_file():
        pytest.skip(f"{BREAST} absent")
    work = tmp_path / "project"
    work.mkdir()
    (tmp_path / "shared").symlink_to(ROOT.parent / "shared")  # the snippet's ../shared/data
    from PIL import Image as PILImage

    with np.load(BREAST, allow_pickle=False) as z:
        PILImage.fromarray(z["val_images"][0]).save(work / "case.png")
    res = subprocess.run([sys.executable, "-c", readme_snippet()], cwd=work, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    auc = float(re.search(r"val AUC ([0-9.]+)", res.stdout).group(1))
    assert auc > 0.7, res.stdout  # 10 epochs of the default cnn: a learnt model, not chance
    assert "(28, 28)" in res.stdout and (work / "runs" / "breast" / "run.json").is_file()
