"""Plots are written atomically as real, re-loadable PNG images; metrics.json is complete."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from meddx.errors import InputError
from meddx.evaluate import plots as P


def _check_png(path, min_side=300):
    assert path.is_file()
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG"
        w, h = im.size
        assert w >= min_side and h >= min_side
        arr = np.asarray(im.convert("L"))
    assert arr.std() > 5  # not a blank canvas
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers


def _data(task, n=120, seed=0):
    rng = np.random.default_rng(seed)
    if task == "binary":
        y = rng.integers(0, 2, n)
        return y, np.clip(0.4 * y + 0.6 * rng.random(n), 0, 1), ["normal", "pneumonia"]
    if task == "multiclass":
        y = rng.integers(0, 3, n)
        p = rng.dirichlet(np.ones(3), n)
        p[np.arange(n), y] += 0.5
        return y, p / p.sum(1, keepdims=True), ["a", "b", "c"]
    y = rng.integers(0, 2, (n, 4))
    return y, np.clip(0.4 * y + 0.6 * rng.random((n, 4)), 0, 1), ["l0", "l1", "l2", "l3"]


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_write_classification_outputs(tmp_path, task):
    y, p, names = _data(task)
    out = tmp_path / task
    m = P.write_classification_outputs(y, p, names, task, out, threshold=0.5, n_boot=100)
    assert set(m["plots"]) == {"roc", "pr", "confusion", "calibration"}
    for name in m["plots"].values():
        _check_png(out / name)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["auc"] == pytest.approx(m["auc"]) and saved["plots"] == m["plots"]
    assert saved["n"] == len(y) and saved["task"] == task and len(saved["auc_ci"]) == 2


def test_single_plots_and_comparison(tmp_path):
    y, p, names = _data("binary")
    P.plot_roc(y, p, names, tmp_path / "roc.png", task="binary", threshold=0.5)
    P.plot_calibration(y, np.stack([1 - p, p], 1), tmp_path / "cal.png", task="binary")
    P.plot_confusion([[50, 10], [5, 55]], names, tmp_path / "cm.png")
    P.plot_roc_comparison({"cnn": (y, p), "logreg": (y, p ** 2)}, tmp_path / "cmp.png")
    yc, pc, _ = _data("multiclass")
    P.plot_roc_comparison({"cnn": (yc, pc)}, tmp_path / "cmp_mc.png")
    for f in ("roc.png", "cal.png", "cm.png", "cmp.png", "cmp_mc.png"):
        _check_png(tmp_path / f)
    # degenerate data draws a readable "undefined" plot instead of crashing
    P.plot_roc(np.zeros(5, int), np.linspace(0, 1, 5), names, tmp_path / "deg.png")
    _check_png(tmp_path / "deg.png")


def test_training_curves_from_csvlogger(tmp_path):
    csv = tmp_path / "history.csv"
    lines = ["epoch,accuracy,auc,learning_rate,loss,val_accuracy,val_auc,val_loss"]
    for e in range(12):
        lines.append(f"{e},{0.6 + e / 50},{0.7 + e / 50},{1e-3 * 0.9 ** e},{1 / (e + 1)},"
                     f"{0.55 + e / 60},{0.65 + e / 60},{1.2 / (e + 1)}")
    csv.write_text("\n".join(lines) + "\n")
    P.plot_training_curves(csv, tmp_path / "history.png")
    _check_png(tmp_path / "history.png")
    only_loss = tmp_path / "loss.csv"
    only_loss.write_text("epoch,loss\n0,1.0\n1,0.5\n")
    P.plot_training_curves(only_loss, tmp_path / "loss.png")
    _check_png(tmp_path / "loss.png", min_side=200)
    with pytest.raises(InputError):
        P.plot_training_curves(tmp_path / "missing.csv", tmp_path / "x.png")


def test_evaluate_import_is_light():
    import subprocess
    import sys

    code = ("import sys, meddx.evaluate; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'matplotlib', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
