"""`meddx train --devices 2`: MirroredStrategy over two logical CPU devices gives a RUN as good as one device.

Each training runs in its own process: logical CPU devices can only be declared before TensorFlow starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from meddx.errors import ConfigError
from meddx.train.devices import parse_devices


def test_parse_devices() -> None:
    assert parse_devices(None) is None
    assert parse_devices("2") == 2
    assert parse_devices(" all ") == "all"
    for bad in ("0", "-1", "two", "1.5", ""):
        with pytest.raises(ConfigError, match="--devices"):
            parse_devices(bad)


def _demo_npz(path: Path, n: int = 720, size: int = 32) -> Path:
    """The demo's synthetic lesion slices as a MedMNIST-style npz, split by patient (6 slices each)."""
    from meddx.data.synthetic import make_synthetic_dataset

    d = make_synthetic_dataset(n=n, size=size, seed=3, dtype="uint8")
    patients = np.arange(n) // 6
    split = np.where(patients % 5 == 0, "val", np.where(patients % 5 == 1, "test", "train"))
    arrays = {f"{s}_images": d["images"][split == s] for s in ("train", "val", "test")}
    arrays.update({f"{s}_labels": d["labels"][split == s].reshape(-1, 1) for s in ("train", "val", "test")})
    np.savez(path, **arrays)
    return path


def _train(data: Path, out: Path, devices: str | None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "meddx.cli", "train", str(data), "--out", str(out), "--epochs", "6",
           "--batch-size", "32", "--seed", "0", "--augment", "none"]
    if devices:
        cmd += ["--devices", devices]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
def test_two_logical_cpus_match_one_device(tmp_path: Path) -> None:
    data = _demo_npz(tmp_path / "demo.npz")
    jobs = {dev: _train(data, tmp_path / f"run{dev or 1}", dev) for dev in (None, "2")}
    for dev, job in jobs.items():
        out, err = job.communicate(timeout=300)
        assert job.returncode == 0, f"--devices {dev}: {err[-2000:]}"
    one = json.loads((tmp_path / "run1" / "run.json").read_text())
    two = json.loads((tmp_path / "run2" / "run.json").read_text())
    assert one["distribution"]["replicas"] == 1 and one["distribution"]["strategy"] == "default"
    d = two["distribution"]
    assert (d["strategy"], d["replicas"], d["device_type"]) == ("MirroredStrategy", 2, "CPU (logical)")
    assert d["devices"] == ["/cpu:0", "/cpu:1"]
    assert (d["per_replica_batch"], d["global_batch"]) == (32, 64)
    assert d["learning_rate"] == pytest.approx(2 * one["distribution"]["learning_rate"])
    auc1, auc2 = one["val_metrics"]["auc"], two["val_metrics"]["auc"]
    print(f"validation AUC: 1 device {auc1:.4f} {one['val_metrics']['auc_ci']} ({one['training_seconds']} s), "
          f"2 logical CPUs {auc2:.4f} {two['val_metrics']['auc_ci']} ({two['training_seconds']} s)")
    # both learn the task, and the 2-device AUC lies within the 1-device run's bootstrap CI widened by 0.05
    assert auc1 > 0.75 and auc2 > 0.75, (auc1, auc2)
    lo, hi = one["val_metrics"]["auc_ci"]
    assert lo - 0.05 <= auc2 <= hi + 0.05, (auc1, auc2, (lo, hi))


def test_devices_after_tensorflow_started_is_refused() -> None:
    """In a process whose TensorFlow already runs on one CPU device, asking for 2 is a clear error."""
    code = ("import tensorflow as tf; tf.constant(1.0) + 1\n"
            "from meddx.train.devices import make_strategy\n"
            "from meddx.errors import ConfigError\n"
            "try:\n    make_strategy('2')\nexcept ConfigError as e:\n    print('refused:', e)\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "refused: --devices 2: TensorFlow was already started" in res.stdout, res.stderr[-2000:]


def test_other_trainers_refuse_devices() -> None:
    """Trainers other than the image classifier's (sequence models) reach compile_model with --devices: refused."""
    from meddx.train.config import TrainConfig
    from meddx.train.fit import compile_model

    with pytest.raises(ConfigError, match="--devices is implemented for image classifiers only"):
        compile_model(TrainConfig(devices="2"), (8, 8, 1), None, 1, 1)
