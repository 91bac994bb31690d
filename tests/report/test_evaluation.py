"""Model evaluation report from a real evaluate output folder; renders in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile

import numpy as np
import pytest

from meddx.evaluate import plot_training_curves, write_classification_outputs
from meddx.report import render_evaluation_report
from meddx.utils import atomic_write_json

from .conftest import run_info


@pytest.fixture
def eval_and_run(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    p1 = np.clip(0.3 * y + 0.35 + 0.25 * rng.standard_normal(120), 0, 1)
    ev = tmp_path / "eval"
    metrics = write_classification_outputs(y, np.stack([1 - p1, p1], 1), ["normal", "lesion"], "binary", ev, n_boot=200)
    run = tmp_path / "run"
    run.mkdir()
    (run / "history.csv").write_text("epoch,loss,val_loss,auc,val_auc\n0,0.7,0.69,0.6,0.58\n1,0.5,0.6,0.8,0.7\n"
                                     "2,0.4,0.55,0.88,0.75\n")
    plot_training_curves(run / "history.csv", run / "training_curves.png")
    atomic_write_json(run / "run.json", run_info())
    return ev, run, metrics


def test_evaluation_report_content(eval_and_run):
    ev, run, metrics = eval_and_run
    path = render_evaluation_report(ev, run)
    assert path == ev / "report.html"
    html = path.read_text()
    lo, hi = metrics["auc_ci"]
    assert f"{metrics['auc']:.3f} (95% CI {lo:.3f}–{hi:.3f})" in html
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert sorted(srcs) == sorted(["roc.png", "pr.png", "confusion.png", "calibration.png", "training_curves.png"])
    for s in srcs:
        assert (ev / s).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # per-class table and the data summary split x class
    assert "<th>Class</th>" in html and "<td>lesion</td>" in html
    assert "<tr><td>train</td><td>40</td><td>38</td></tr>" in html
    assert "cnn3d" in html


def test_evaluation_report_without_run_and_missing_metrics(tmp_path, eval_and_run):
    from meddx.errors import InputError

    ev, _, _ = eval_and_run
    (ev / "pr.png").unlink()
    html = render_evaluation_report(ev).read_text()
    assert "pr.png" not in html and "roc.png" in html
    with pytest.raises(InputError, match="metrics.json"):
        render_evaluation_report(tmp_path / "nothing")


def test_evaluation_report_renders_in_chromium(eval_and_run, tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not exe:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    from PIL import Image as PILImage

    ev, run, _ = eval_and_run
    path = render_evaluation_report(ev, run)
    shot = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                        f"--screenshot={shot}", "--window-size=1200,2400", path.resolve().as_uri()],
                       capture_output=True, timeout=60, check=False)
    assert shot.is_file(), "chromium wrote no screenshot"
    a = np.asarray(PILImage.open(shot).convert("RGB")).astype(int)
    assert a.shape[:2] == (2400, 1200)
    # non-blank, and the plots were loaded: plenty of coloured (non-grey) pixels from the curves/heatmaps
    assert a.std() > 10
    coloured = (np.abs(a[..., 0] - a[..., 2]) > 60).mean()
    assert coloured > 0.002
