from __future__ import annotations

import csv

import numpy as np
import pytest

from meddx.cli import main
from meddx.app.compare import compare_models
from meddx.errors import MeddxError


def _npz(path, n=80, size=16, seed=0):
    rng = np.random.default_rng(seed)

    def make(k):
        y = rng.integers(0, 2, k)
        x = rng.integers(0, 60, (k, size, size)).astype(np.uint8)
        x[y == 1, 4:12, 4:12] += 150  # a bright square: separable
        return x, y[:, None].astype(np.uint8)

    xtr, ytr = make(n)
    xva, yva = make(40)
    np.savez(path, train_images=xtr, train_labels=ytr, val_images=xva, val_labels=yva)
    return path


def test_compare_classic_table_and_plot(tmp_path):
    data = _npz(tmp_path / "tiny.npz")
    res = compare_models(data, ["logreg", "svm"], tmp_path / "out", log=lambda s: None)
    assert res["eval_split"] == "val" and res["n"] == 40
    rows = list(csv.DictReader(open(tmp_path / "out" / "comparison.csv")))
    assert [r["model"] for r in rows] == ["logreg", "svm"]
    for r in rows:
        assert float(r["auc"]) > 0.9 and float(r["auc_ci_low"]) <= float(r["auc"]) <= float(r["auc_ci_high"])
        assert 0.0 <= float(r["accuracy"]) <= 1.0 and float(r["train_seconds"]) >= 0
    md = (tmp_path / "out" / "comparison.md").read_text()
    assert "NO test split" in md and "| svm |" in md
    assert (tmp_path / "out" / "roc.png").stat().st_size > 1000


def test_compare_unknown_model_is_a_clear_error(tmp_path, capsys):
    data = _npz(tmp_path / "tiny.npz", n=20)
    with pytest.raises(MeddxError):
        compare_models(data, ["nosuchmodel"], tmp_path / "out", log=lambda s: None)
    assert main(["compare", str(data), "--models", "nosuchmodel", "--out", str(tmp_path / "o2")]) == 2
    assert "nosuchmodel" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_cli_with_cnn(tmp_path):
    data = _npz(tmp_path / "tiny.npz", n=120)
    assert main(["compare", str(data), "--models", "cnn,logreg", "--out", str(tmp_path / "o"), "--epochs", "3"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "o" / "comparison.csv")))
    assert [r["model"] for r in rows] == ["cnn", "logreg"]
