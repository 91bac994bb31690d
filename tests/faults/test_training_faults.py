"""Fault injection on training: SIGKILL a training process at chosen and at random points (inside an epoch, while a
checkpoint is being written, between epochs, after the last epoch before run.json), re-run the same command until
it finishes, and check the RUN equals an uninterrupted run's: same best epoch, epochs, validation metrics, one
history row per epoch with the same values, and the same weights within float tolerance."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

CHILD = Path(__file__).with_name("train_child.py")
EPOCHS, PATIENCE = 6, 2


def _data(path: Path, n: int = 72, size: int = 12) -> Path:
    """Class 1 has a bright square at a random place; class 0 is noise (uint8, MedMNIST layout)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 80, size=(n, size, size)).astype(np.uint8)
    y = (np.arange(n) % 2).astype(np.uint8)
    for i in np.flatnonzero(y):
        r, c = rng.integers(1, size - 4, size=2)
        x[i, r:r + 3, c:c + 3] = rng.integers(90, 200)  # faint for some: training needs a few epochs
    k = int(n * 0.7)
    np.savez(path, train_images=x[:k], train_labels=y[:k, None], val_images=x[k:], val_labels=y[k:, None])
    return path


def _run(data: Path, out: Path, fault: str = "", kill_after: float | None = None,
         epochs: int = EPOCHS) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEDDX_FAULT": fault, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "0",
           "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(CHILD), str(data), str(out), str(epochs), str(PATIENCE)]
    if kill_after is None:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    # kill_after counts from the moment training starts (the "training ..." line), not from start-up, so the
    # kills land in training and in writing the RUN whatever the machine's load
    err_file = out.parent / f".stderr-{os.getpid()}-{time.monotonic_ns()}.txt"
    err_fh = err_file.open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err_fh, text=True)
    lines = []
    for line in proc.stdout:  # type: ignore[union-attr]
        lines.append(line)
        if line.startswith(("training ", "DONE")):
            break
    try:
        proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
    stdout, _ = proc.communicate(timeout=120)
    err_fh.close()
    stderr = err_file.read_text()
    err_file.unlink()
    return subprocess.CompletedProcess(cmd, proc.returncode, "".join(lines) + (stdout or ""), stderr)


def _weights(run: Path) -> list[np.ndarray]:
    import h5py

    with zipfile.ZipFile(run / "model.keras") as z, h5py.File(io.BytesIO(z.read("model.weights.h5")), "r") as h:
        out: list[np.ndarray] = []
        # the model's own variables (an optimiser that never ran in the last attempt is not saved)
        h["layers"].visititems(lambda name, obj: out.append(np.asarray(obj)) if isinstance(obj, h5py.Dataset)
                               else None)
        return out


def _summary(run: Path) -> dict:
    info = json.loads((run / "run.json").read_text())
    rows = list(csv.DictReader((run / "history.csv").open()))
    return {"best_epoch": info["best_epoch"], "epochs_run": info["epochs_run"],
            "auc": info["val_metrics"]["auc"], "accuracy": info["val_metrics"]["accuracy"],
            "threshold": info["threshold"], "history": rows, "weights": _weights(run)}


def _assert_same(got: dict, ref: dict) -> None:
    assert got["best_epoch"] == ref["best_epoch"]
    assert got["epochs_run"] == ref["epochs_run"]
    epochs = [int(r["epoch"]) for r in got["history"]]
    assert epochs == list(range(ref["epochs_run"])), f"history epochs {epochs}"  # one row each, no duplicate
    for a, b in zip(got["history"], ref["history"]):
        assert set(a) == set(b)
        for k in ("loss", "val_auc", "val_acc", "val_score"):
            assert float(a[k]) == pytest.approx(float(b[k]), rel=1e-4, abs=1e-5), (a["epoch"], k)
    assert got["auc"] == pytest.approx(ref["auc"], abs=1e-6)
    assert got["accuracy"] == pytest.approx(ref["accuracy"], abs=1e-6)
    assert (got["threshold"] is None) == (ref["threshold"] is None)
    if ref["threshold"] is not None:
        assert got["threshold"] == pytest.approx(ref["threshold"], abs=1e-5)
    assert len(got["weights"]) == len(ref["weights"])
    for a, b in zip(got["weights"], ref["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The tiny data and the RUN of an uninterrupted training."""
    tmp = tmp_path_factory.mktemp("ref")
    data = _data(tmp / "sq.npz")
    res = _run(data, tmp / "run")
    assert res.returncode == 0, res.stderr[-3000:]
    return data, _summary(tmp / "run")


def _resume_until_done(data: Path, out: Path, faults: list[str]) -> list[subprocess.CompletedProcess]:
    """Run with each fault in turn (each must die by SIGKILL), then once without: returns every attempt."""
    attempts = []
    for fault in faults:
        res = _run(data, out, fault)
        attempts.append(res)
        assert res.returncode == -signal.SIGKILL, (fault, res.returncode, res.stderr[-3000:])
        assert not (out / "run.json").exists(), fault
    res = _run(data, out)
    attempts.append(res)
    assert res.returncode == 0, res.stderr[-3000:]
    return attempts


def test_kills_in_each_window_resume_to_the_uninterrupted_result(reference, tmp_path: Path) -> None:
    """One run killed three times (epochs chosen by a fixed seed): inside an epoch, with an epoch's state written
    but not yet renamed into place, and after the last epoch (training marked ended, run.json not written) --
    then it finishes identical to the uninterrupted run, without training again after the last epoch."""
    data, ref = reference
    last = ref["epochs_run"] - 1
    rng = random.Random(19)
    faults = [f"batch:{rng.randrange(0, 2)}:1", f"epoch_tmp:{rng.randrange(1, last)}", f"finished:{last}"]
    attempts = _resume_until_done(data, tmp_path / "run", faults)
    _assert_same(_summary(tmp_path / "run"), ref)
    # the last re-run found training ended: it rebuilt the RUN from the best epoch without training again
    assert "training had already ended" in attempts[-1].stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
@pytest.mark.extended  # CI runs the each-window chain and a random-kill run
def test_kills_in_every_window_resume_to_the_uninterrupted_result(reference, tmp_path: Path) -> None:
    """Five kills in one run: inside an epoch, with the epoch state half-renamed, after a complete epoch state,
    after the last epoch, and after model.keras but before run.json."""
    data, ref = reference
    last = ref["epochs_run"] - 1
    rng = random.Random(7)
    faults = [f"batch:{rng.randrange(0, 2)}:0", f"epoch_tmp:{rng.randrange(1, 3)}", f"epoch:{rng.randrange(2, last)}",
              f"finished:{last}", "run_json:0"]
    attempts = _resume_until_done(data, tmp_path / "run", faults)
    _assert_same(_summary(tmp_path / "run"), ref)
    assert "training had already ended" in attempts[-1].stderr


@pytest.mark.slow
@pytest.mark.extended  # CI runs the each-window chain and a random-kill run
def test_kill_after_best_weights_and_before_run_json(reference, tmp_path: Path) -> None:
    """Killed right after the best epoch's weights were saved (its epoch state not yet), then after model.keras
    but before run.json: the re-runs redo that epoch alike, do not train again at the end, complete run.json."""
    data, ref = reference
    _resume_until_done(data, tmp_path / "run", [f"best:{ref['best_epoch'] - 1}", "run_json:0"])
    _assert_same(_summary(tmp_path / "run"), ref)


@pytest.mark.slow
@pytest.mark.extended  # CI runs the each-window chain and a random-kill run
def test_a_half_written_checkpoint_is_ignored(reference, tmp_path: Path) -> None:
    """Leftovers of interrupted writes (a temporary epoch folder, a truncated best file, garbage epoch folder)
    never break the resume: the newest complete state is used and the leftovers are cleaned up."""
    data, ref = reference
    out2 = tmp_path / "run2"
    res = _run(data, out2, "epoch:2")
    assert res.returncode == -signal.SIGKILL
    ck = out2 / "checkpoints"
    (ck / ".tmp-epoch-0004-999").mkdir()
    (ck / ".tmp-epoch-0004-999" / "model.npz").write_bytes(b"PK\x03\x04trunc")
    (ck / "epoch-0009").mkdir()  # a folder with no state: not complete, must be skipped
    (ck / "epoch-0009" / "state.json").write_text("{not json")
    res = _run(data, out2)
    assert res.returncode == 0, res.stderr[-3000:]
    _assert_same(_summary(out2), ref)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, pytest.param(2, marks=pytest.mark.extended)])
def test_random_time_kills_resume_to_the_uninterrupted_result(reference, tmp_path: Path, seed: int) -> None:
    """Kills at random wall-clock times (after start-up, anywhere in training or in writing the RUN), several
    per run, until a run finishes; then the RUN equals the uninterrupted one."""
    data, ref = reference
    rng = random.Random(seed)
    out = tmp_path / "run"
    kills = 0
    t0 = time.monotonic()
    for _ in range(12):
        res = _run(data, out, kill_after=rng.uniform(0.5, 6.0))
        if res.returncode == 0:
            break
        assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
        kills += 1
        if (out / "run.json").exists():  # killed after the RUN was complete (while exiting): nothing to resume
            break
    else:
        res = _run(data, out)
        assert res.returncode == 0, res.stderr[-3000:]
    assert kills >= 1  # at least one kill landed after training had started
    assert time.monotonic() - t0 < 1800
    _assert_same(_summary(out), ref)


# -- in-process: damaged or odd checkpoint folders --------------------------------------------------------------

def _tiny_fit(run: Path, epochs: int = 3, patience: int | None = None, scores: list[float] | None = None):
    """A 2-layer model fitted with the checkpointer; `scores` (per epoch) stand in for the validation score."""
    import keras

    from meddx.train.checkpoints import EpochOrder, fit_resumable, make_checkpointer

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dropout(0.3),
                              keras.layers.Dense(1)])
    model.compile(optimizer="adamw", loss="mse")

    class Score(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_score"] = (scores or [0.1 * epoch for _ in range(epochs)])[epoch]

    ck = make_checkpointer(run, "val_score", patience, order=EpochOrder(16, 0))
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    fit_resumable(model, x, epochs, [Score(), ck], verbose=0, y=x[:, :1], batch_size=8, shuffle=False)
    return model, ck


def test_a_corrupt_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    from meddx.errors import ConfigError
    from meddx.train.checkpoints import CheckpointStore

    run = tmp_path / "run"
    _tiny_fit(run, epochs=3)
    store = CheckpointStore(run)
    (run / "checkpoints" / "finished.json").unlink()  # as if killed after the last epoch state only
    state, epoch_dir = store.latest()
    assert state.epochs_done == 3 and epoch_dir is not None
    (epoch_dir / "model.npz").write_bytes(b"PK\x03\x04 truncated by a failing disk")
    with pytest.raises(ConfigError, match=r"cannot resume from checkpoints/epoch-0003 .*--overwrite"):
        _tiny_fit(run, epochs=5)


def test_a_corrupt_best_file_is_one_clear_error(tmp_path: Path) -> None:
    from meddx.errors import ConfigError

    run = tmp_path / "run"
    _, ck = _tiny_fit(run, epochs=2)
    (run / "checkpoints" / ck.state.best_file).write_bytes(b"garbage")
    with pytest.raises(ConfigError, match=r"best epoch's weights .* cannot be read"):
        _tiny_fit(run, epochs=2)


def test_early_stop_killed_before_it_was_marked_does_not_train_on(tmp_path: Path) -> None:
    """Early stopping decided at epoch 3 (best at 1, patience 2); killed before finished.json: the re-run with a
    longer schedule must not train on, and keeps the best epoch."""
    run = tmp_path / "run"
    scores = [0.5, 0.9, 0.8, 0.7, 0.95, 0.99, 0.99, 0.99]
    _, ck = _tiny_fit(run, epochs=8, patience=2, scores=scores)
    assert ck.state.epochs_done == 4 and ck.best_epoch == 1 and ck.state.stop_reason
    (run / "checkpoints" / "finished.json").unlink()
    _, ck2 = _tiny_fit(run, epochs=8, patience=2, scores=scores)
    assert ck2.state.epochs_done == 4 and ck2.best_epoch == 1
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]


def test_resumed_tiny_fit_equals_uninterrupted(tmp_path: Path) -> None:
    """In-process: weights and optimiser (including the dropout seed state) survive a stop after epoch 2."""
    m_ref, _ = _tiny_fit(tmp_path / "a", epochs=4)
    _tiny_fit(tmp_path / "b", epochs=2)
    (tmp_path / "b" / "checkpoints" / "finished.json").unlink()  # as if killed after epoch 2's state
    m_res, ck = _tiny_fit(tmp_path / "b", epochs=4)
    assert ck.state.epochs_done == 4 and ck.best_epoch == 3
    for a, b in zip(m_ref.get_weights(), m_res.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
