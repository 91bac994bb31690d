"""`meddx train DATA --folds K [--engine ray]`: patient-grouped folds, one RUN per fold, cv.json summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 synthetic 32x32 slices of 8 patients (6 each), as a manifest with patient_id."""
    from meddx.data.synthetic import write_synthetic_folder

    return write_synthetic_folder(tmp_path_factory.mktemp("cv") / "data", n=48, size=32, seed=1)


def _patients(run: Path, split: str) -> set[str]:
    with (run / "splits.csv").open(newline="") as fh:
        return {r["patient_id"] for r in csv.DictReader(fh) if r["split"] == split}


def _train_args(data: Path, out: Path) -> list[str]:
    return ["train", str(data), "--out", str(out), "--folds", "2", "--epochs", "1", "--batch-size", "16"]


@pytest.mark.slow  # two small trainings: ~80 s on the loaded 2-core machine
def test_folds_are_patient_grouped_runs_with_a_summary(data: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from meddx.cli import main

    assert main(_train_args(data, tmp_path / "cv")) == 0
    cv = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert cv["folds"] == 2 and [f["fold"] for f in cv["per_fold"]] == [0, 1]
    aucs = [f["val_auc"] for f in cv["per_fold"]]
    assert all(0.0 <= a <= 1.0 for a in aucs)
    assert cv["mean_auc"] == pytest.approx(np.mean(aucs)) and cv["sd_auc"] == pytest.approx(np.std(aucs, ddof=1))
    runs = [tmp_path / "cv" / f"fold_{k}" for k in range(2)]
    assert all((r / "run.json").is_file() and (r / "model.keras").is_file() for r in runs)
    val = [_patients(r, "val") for r in runs]
    assert val[0] and val[1] and not val[0] & val[1]  # each patient validated in exactly one fold
    assert val[0] | val[1] == _patients(runs[0], "train") | val[0]
    assert _patients(runs[0], "train") == val[1]
    assert "cross-validation (2 folds): validation AUC" in capsys.readouterr().out


def test_folds_need_two_or_more(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from meddx.cli import main

    assert main(["train", str(data), "--out", str(tmp_path / "cv"), "--folds", "1"]) == 2
    assert "--folds needs K >= 2" in capsys.readouterr().err


@pytest.mark.slow
def test_folds_on_ray_run_in_parallel(data: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """--engine ray: the two folds as Ray tasks of one CPU each on a local num_cpus=2 Ray, started quietly."""
    pytest.importorskip("ray")
    from meddx.cli import main

    assert main(_train_args(data, tmp_path / "cv") + ["--engine", "ray"]) == 0
    cv = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert cv["engine"] == "ray" and len(cv["per_fold"]) == 2
    assert all((tmp_path / "cv" / f"fold_{k}" / "run.json").is_file() for k in range(2))
    captured = capfd.readouterr()
    assert "done on Ray" in captured.out
    noisy = [line for line in captured.err.splitlines() if line.strip() and "meddx: warning" not in line]
    assert len(noisy) <= 1, noisy  # Ray's own start-up logs stay off the terminal
