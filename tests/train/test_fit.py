"""Training loop: learns a simple task, writes a complete RUN, resumes after an interruption, is reproducible."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from meddx.train.config import TrainConfig
from meddx.train.fit import train


def make_square_npz(path: Path, n: int = 160, size: int = 16, seed: int = 0, volumes: bool = False) -> Path:
    """Class 1 has a bright square at a random place; class 0 has noise only (uint8, MedMNIST layout)."""
    rng = np.random.default_rng(seed)
    shape = (size,) * (3 if volumes else 2)
    x = rng.integers(0, 60, size=(n, *shape)).astype(np.uint8)
    y = (np.arange(n) % 2).astype(np.uint8)
    for i in np.flatnonzero(y):
        r, c = rng.integers(2, size - 6, size=2)
        if volumes:
            x[i, 4:10, r:r + 4, c:c + 4] = 220
        else:
            x[i, r:r + 4, c:c + 4] = 220
    k = int(n * 0.75)
    np.savez(path, train_images=x[:k], train_labels=y[:k, None], val_images=x[k:], val_labels=y[k:, None])
    return path


def test_train_learns_and_writes_complete_run(tmp_path):
    data = make_square_npz(tmp_path / "sq.npz")
    info = train(data, tmp_path / "run", TrainConfig(epochs=6, batch_size=32, seed=1), verbose=0, log=lambda s: None)
    run = tmp_path / "run"
    for name in ("model.keras", "run.json", "history.csv", "training_curves.png", "val_metrics.json", "splits.csv"):
        assert (run / name).is_file(), name
    assert info["val_metrics"]["auc"] > 0.9
    assert info["task"] == "binary" and info["threshold"] is not None
    assert info["preprocessing"]["image_size"] == [16, 16]
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert len(rows) == info["epochs_run"] and "val_auc" in rows[0]
    assert not (run / "checkpoints").exists()  # removed after a clean finish


def test_refuses_to_overwrite_a_finished_run(tmp_path):
    from meddx.errors import ConfigError

    data = make_square_npz(tmp_path / "sq.npz", n=64)
    train(data, tmp_path / "run", TrainConfig(epochs=1, batch_size=32), verbose=0, log=lambda s: None)
    with pytest.raises(ConfigError, match="already holds"):
        train(data, tmp_path / "run", TrainConfig(epochs=1, batch_size=32), verbose=0, log=lambda s: None)


def test_interrupted_run_resumes_where_it_stopped(tmp_path):
    import keras

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    data = make_square_npz(tmp_path / "sq.npz", n=96)
    cfg = TrainConfig(epochs=4, batch_size=32, seed=0)
    with pytest.raises(KeyboardInterrupt):
        train(data, tmp_path / "run", cfg, verbose=0, log=lambda s: None, extra_callbacks=[Crash()])
    assert (tmp_path / "run" / "checkpoints").is_dir() and not (tmp_path / "run" / "run.json").exists()
    logs: list[str] = []
    info = train(data, tmp_path / "run", cfg, verbose=0, log=logs.append)
    assert any("resuming" in line for line in logs)
    epochs = [int(r["epoch"]) for r in csv.DictReader((tmp_path / "run" / "history.csv").open())]
    assert epochs == [0, 1, 2, 3]  # epochs 0-1 before the crash, 2-3 after resuming; none repeated
    assert info["epochs_run"] == 4


def test_interrupted_run_with_other_settings_is_not_resumed(tmp_path):
    """An interrupted run is resumed only with the settings it started with: other ones are an error naming
    what changed, or with overwrite a fresh start (a time budget may change)."""
    import keras

    from meddx.errors import ConfigError

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    data = make_square_npz(tmp_path / "sq.npz", n=64)
    cfg = TrainConfig(epochs=3, batch_size=32, seed=0)
    with pytest.raises(KeyboardInterrupt):
        train(data, tmp_path / "run", cfg, verbose=0, log=lambda s: None, extra_callbacks=[Crash()])
    other = cfg.updated({"learning_rate": 0.01})
    with pytest.raises(ConfigError, match=r"cannot be resumed .*learning_rate 0.002 -> 0.01"):
        train(data, tmp_path / "run", other, verbose=0, log=lambda s: None)
    assert (tmp_path / "run" / "checkpoints").is_dir()  # the refused call left the interrupted run alone
    logs: list[str] = []
    info = train(data, tmp_path / "run", other, overwrite=True, verbose=0, log=logs.append)
    assert any("new run" in line for line in logs) and info["epochs_run"] == 3
    assert info["config"]["learning_rate"] == 0.01


def test_same_seed_same_result(tmp_path):
    data = make_square_npz(tmp_path / "sq.npz", n=64)
    a = train(data, tmp_path / "a", TrainConfig(epochs=2, batch_size=32, seed=7), verbose=0, log=lambda s: None)
    b = train(data, tmp_path / "b", TrainConfig(epochs=2, batch_size=32, seed=7), verbose=0, log=lambda s: None)
    ha = (tmp_path / "a" / "history.csv").read_text().splitlines()[1:]
    hb = (tmp_path / "b" / "history.csv").read_text().splitlines()[1:]
    la = [float(r.split(",")[1]) for r in ha]
    lb = [float(r.split(",")[1]) for r in hb]
    assert np.allclose(la, lb, rtol=1e-4), (la, lb)
    assert a["val_metrics"]["auc"] == pytest.approx(b["val_metrics"]["auc"], abs=1e-6)


def test_config_file_and_unknown_keys(tmp_path):
    from meddx.errors import ConfigError

    (tmp_path / "c.toml").write_text("[train]\nepochs = 3\nlearning_rate = 0.01\n")
    cfg = TrainConfig.from_file(tmp_path / "c.toml")
    assert cfg.epochs == 3 and cfg.learning_rate == 0.01
    (tmp_path / "bad.json").write_text('{"epoch": 3}')
    with pytest.raises(ConfigError, match="unknown setting.*epoch"):
        TrainConfig.from_file(tmp_path / "bad.json")


def test_config_file_value_errors_name_the_file(tmp_path):
    from meddx.errors import ConfigError

    (tmp_path / "range.json").write_text('{"val_fraction": 1.0}')
    with pytest.raises(ConfigError, match=r"range\.json: val_fraction must be in \[0, 1\), got 1\.0"):
        TrainConfig.from_file(tmp_path / "range.json")
    with pytest.raises(ConfigError, match=r"^epochs must be >= 1"):  # a command-line option names no file
        TrainConfig().updated({"epochs": 0})


def test_multilabel_and_multiclass_heads(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(48, 12, 12)).astype(np.uint8)
    y_ml = rng.integers(0, 2, size=(48, 3)).astype(np.uint8)
    np.savez(tmp_path / "ml.npz", train_images=x[:36], train_labels=y_ml[:36], val_images=x[36:], val_labels=y_ml[36:])
    info = train(tmp_path / "ml.npz", tmp_path / "ml", TrainConfig(epochs=1, batch_size=16), verbose=0,
                 log=lambda s: None)
    assert info["task"] == "multilabel" and info["input_shape"] == [12, 12, 1]
    y_mc = (np.arange(48) % 3).astype(np.uint8)[:, None]
    np.savez(tmp_path / "mc.npz", train_images=x[:36], train_labels=y_mc[:36], val_images=x[36:], val_labels=y_mc[36:])
    info = train(tmp_path / "mc.npz", tmp_path / "mc", TrainConfig(epochs=1, batch_size=16), verbose=0,
                 log=lambda s: None)
    assert info["task"] == "multiclass" and len(info["class_names"]) == 3
    assert len(info["val_metrics"]["per_class"]) == 3
    assert info["config"]["class_weights"] is False  # default: no class weights, recorded as used


def test_class_weights_follow_the_trainers_default_unless_set() -> None:
    from meddx.train.config import class_weights_for

    assert not class_weights_for(TrainConfig(), default=False) and class_weights_for(TrainConfig(), default=True)
    assert class_weights_for(TrainConfig(class_weights=True), default=False)
    assert not class_weights_for(TrainConfig(class_weights=False), default=True)
    assert TrainConfig().updated({"class_weights": True}).class_weights is True


def test_class_balancing_rides_in_the_dataset_as_sample_weights() -> None:
    """Balanced weights n / (k n_c) per case, delivered as the dataset's third element, augmentation untouched."""
    from meddx.train.fit import class_sample_weights, make_tf_dataset
    from meddx.transforms.augment import Augmenter

    y = np.array([0, 0, 0, 1], np.float32).reshape(-1, 1)
    w = class_sample_weights(y, "binary")
    np.testing.assert_allclose(w, [4 / 6, 4 / 6, 4 / 6, 2.0])
    assert class_sample_weights(np.zeros((4, 3)), "multilabel") is None
    x = np.arange(4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8, 1)
    batch = next(iter(make_tf_dataset(x, y, 4, 0, Augmenter.from_preset("flip", 2, seed=0), sample_weight=w)))
    xb, yb, wb = (t.numpy() for t in batch)
    for i in range(4):  # each weight still belongs to its own case after shuffling
        assert wb[i] == pytest.approx(2.0 if yb[i, 0] == 1 else 4 / 6)
    assert sorted(xb.sum(axis=(1, 2, 3))) == pytest.approx(sorted(x.sum(axis=(1, 2, 3))))


# -- the closing log line (`log_done`): rounded AUC with its CI, or n/a --------------------------------------
def _lines(val_metrics: dict) -> list[str]:
    from meddx.train.fit import log_done

    lines: list[str] = []
    log_done({"val_metrics": val_metrics, "best_epoch": 3, "epochs_run": 5}, 90.0, lines.append)
    return lines


def _line(val_metrics: dict) -> str:
    return _lines(val_metrics)[0]


def test_auc_and_its_interval_are_rounded() -> None:
    line = _line({"auc": 0.80454, "auc_ci": [0.6909435974653365, 0.8981513409961686], "accuracy": 0.26923})
    assert line == ("done in 1.5 min (best epoch 3/5): validation AUC 0.8045 [95% CI 0.691, 0.898], "
                    "accuracy 0.2692")


def test_missing_auc_or_interval_is_said_plainly() -> None:
    assert "validation AUC n/a, accuracy 0.5000" in _line({"auc": None, "auc_ci": None, "accuracy": 0.5})
    assert "validation AUC 0.7000, accuracy" in _line({"auc": 0.7, "auc_ci": [None, None], "accuracy": 0.5})


def test_validation_caveats_follow_the_closing_line() -> None:
    lines = _lines({"auc": 0.43, "auc_ci": [None, None], "accuracy": 0.2,
                    "warnings": ["all 15 cases come from one patient/source"]})
    assert len(lines) == 2 and lines[1] == "validation caveat: all 15 cases come from one patient/source"
