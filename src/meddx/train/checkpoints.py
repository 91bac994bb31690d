"""Crash-safe training state: every epoch's weights, optimiser, best epoch, early-stopping and history, atomically.

A kill at any moment leaves the RUN's `checkpoints/` folder holding the last complete epoch, so re-running
`meddx train` with the same `--out` continues exactly there (same data order and augmentation draws: they are
keyed by seed and epoch, see `EpochOrder`) and finishes with the result an uninterrupted run gives. Layout:

    checkpoints/epoch-0007/{state.json, model.npz, optimizer.npz}   the state after 7 completed epochs
    checkpoints/best-0005.npz                                        the best epoch's weights (0-based epoch 4)
    checkpoints/finished.json                                        training ended; only run.json is missing

Each epoch folder is written under a temporary name and renamed whole (`os.replace`), the best weights and
`finished.json` are temp + rename files, and `history.csv` is rewritten from the state (never appended), so a
history row can neither be lost nor duplicated. Older states are removed only after the newer one is complete.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import re
import shutil
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from meddx.errors import ConfigError
from meddx.utils import atomic_path, atomic_write_text

LOGGER = logging.getLogger(__name__)
CKPT_DIR = "checkpoints"
FINISHED = "finished.json"
_EPOCH_RE = re.compile(r"^epoch-(\d{4,})$")


class EpochOrder:
    """Case order and augmentation randomness of a training epoch, derived from (seed, epoch) alone.

    A resumed run therefore sees exactly the batches the uninterrupted run would have seen (a `tf.data`
    reshuffle or a running numpy generator would restart from epoch 0). `Checkpointer` sets `epoch`."""

    def __init__(self, n: int, seed: int, auto: bool = False) -> None:
        self.n, self.seed, self.epoch, self.auto = int(n), int(seed), 0, auto

    def take(self) -> int:
        """The epoch a new pass over the data is for (`auto`: no callback sets it, each pass is the next)."""
        e = self.epoch
        if self.auto:
            self.epoch += 1
        return e

    def permutation(self, epoch: int | None = None) -> np.ndarray:
        e = self.epoch if epoch is None else epoch
        return np.random.default_rng([self.seed, int(e), 0x5EED]).permutation(self.n).astype(np.int64)

    def rng(self, epoch: int, batch: int) -> np.random.Generator:
        """The augmentation generator of one batch of one epoch."""
        return np.random.default_rng([self.seed, int(epoch), int(batch), 0xA06])


@dataclass
class TrainingState:
    """Where training stands after `epochs_done` complete epochs (0-based epoch numbers inside)."""

    epochs_done: int = 0
    best_score: float | None = None  # None: no epoch scored yet
    best_epoch: int = -1
    best_file: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    finished: bool = False
    stop_reason: str | None = None

    @classmethod
    def from_dict(cls, d: Any) -> "TrainingState":
        if not isinstance(d, dict):
            raise ValueError("not an object")
        s = cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        if not isinstance(s.epochs_done, int) or s.epochs_done < 0 or not isinstance(s.history, list):
            raise ValueError("bad epoch count or history")
        if len(s.history) != s.epochs_done:
            raise ValueError(f"{len(s.history)} history rows for {s.epochs_done} epochs")
        return s


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _save_npz(path: Path, arrays: list[np.ndarray]) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, *arrays)
        fh.flush()
        os.fsync(fh.fileno())


def _load_npz(path: Path) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


def _model_vars(model: Any) -> list[Any]:
    """Weights (trainable and not) plus the random-seed states (dropout), in a stable order."""
    seeds = [v for v in model.variables if "seed_generator_state" in v.path]
    return list(model.weights) + seeds


def _assign(variables: list[Any], values: list[np.ndarray], what: str) -> None:
    if len(variables) != len(values) or any(tuple(v.shape) != a.shape for v, a in zip(variables, values)):
        raise ValueError(f"{what}: saved {len(values)} arrays do not match the model's {len(variables)} variables")
    for v, a in zip(variables, values):
        v.assign(a)


def history_csv(rows: list[dict[str, Any]]) -> str:
    """history.csv text (epoch first, then the logged values in sorted order, as Keras's CSVLogger writes it)."""
    keys = sorted({k for r in rows for k in r if k != "epoch"})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["epoch", *keys])
    for r in rows:
        w.writerow([r["epoch"], *[r.get(k, "") for k in keys]])
    return buf.getvalue()


class CheckpointStore:
    """The `checkpoints/` folder of a RUN: read the newest complete state, write a new one atomically."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / CKPT_DIR

    def exists(self) -> bool:
        """Whether an interrupted run left a state to resume from."""
        return (self.dir / FINISHED).is_file() or bool(self._epoch_dirs())

    def _epoch_dirs(self) -> list[tuple[int, Path]]:
        if not self.dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.dir.iterdir() if (m := _EPOCH_RE.match(p.name)) and p.is_dir()]
        return sorted(found, reverse=True)

    def latest(self) -> tuple[TrainingState, Path | None] | None:
        """(state, its epoch folder or None for a finished state) of the newest readable state, else None."""
        fin = self.dir / FINISHED
        if fin.is_file():
            try:
                st = TrainingState.from_dict(json.loads(fin.read_text()))
                if st.best_file is None or (self.dir / st.best_file).is_file():
                    return st, None
            except (OSError, ValueError, TypeError) as exc:
                LOGGER.warning(f"ignoring unreadable {fin}: {exc}")
        for _, d in self._epoch_dirs():
            try:
                st = TrainingState.from_dict(json.loads((d / "state.json").read_text()))
                if all((d / f).is_file() for f in ("model.npz", "optimizer.npz")) and (
                        st.best_file is None or (self.dir / st.best_file).is_file()):
                    return st, d
            except (OSError, ValueError, TypeError) as exc:
                LOGGER.warning(f"ignoring unreadable checkpoint {d.name}: {exc}")
        return None

    def write_best(self, model: Any, epoch: int) -> str:
        """Save the best epoch's weights (temp + rename); returns the file name the next state refers to."""
        name = f"best-{epoch + 1:04d}.npz"
        with atomic_path(self.dir / name) as tmp:
            _save_npz(tmp, [np.asarray(v.numpy()) for v in _model_vars(model)])
        return name

    def write_epoch(self, model: Any, state: TrainingState) -> None:
        """The state after `state.epochs_done` epochs: written to a temporary folder, renamed whole, then the
        history rewritten and older states removed."""
        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.dir / f"epoch-{state.epochs_done:04d}"
        tmp = self.dir / f".tmp-{final.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        _save_npz(tmp / "model.npz", [np.asarray(v.numpy()) for v in _model_vars(model)])
        opt = getattr(model, "optimizer", None)
        _save_npz(tmp / "optimizer.npz", [np.asarray(v.numpy()) for v in (opt.variables if opt is not None else [])])
        with open(tmp / "state.json", "w", encoding="utf-8") as fh:
            json.dump(asdict(state), fh)
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if final.exists():  # a state for this epoch count from an earlier attempt: the new one replaces it
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(self.dir)
        self.write_history(state)
        self.prune(keep=final, best=state.best_file)

    def write_finished(self, state: TrainingState) -> None:
        """Mark training as ended: a re-run only rebuilds the RUN's files from the best weights."""
        state.finished = True
        atomic_write_text(self.dir / FINISHED, json.dumps(asdict(state)))
        _fsync_dir(self.dir)
        self.write_history(state)

    def write_history(self, state: TrainingState) -> None:
        atomic_write_text(self.run_dir / "history.csv", history_csv(state.history))

    def prune(self, keep: Path, best: str | None) -> None:
        """Remove older epoch states, unreferenced best files and leftovers of interrupted writes."""
        for p in self.dir.iterdir():
            if p == keep or p.name == best or p.name == FINISHED:
                continue
            if _EPOCH_RE.match(p.name) or p.name.startswith((".tmp-", "best-", ".best-")):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    def load_best(self, model: Any, state: TrainingState) -> bool:
        """Set the model to the best epoch's weights; False when no epoch was ever scored."""
        if not state.best_file:
            return False
        _assign(_model_vars(model), _load_npz(self.dir / state.best_file), state.best_file)
        return True

    def restore(self, model: Any, epoch_dir: Path) -> None:
        """Model and optimiser variables of a saved epoch (the optimiser is built first)."""
        _assign(_model_vars(model), _load_npz(epoch_dir / "model.npz"), f"{epoch_dir.name}/model.npz")
        opt = model.optimizer
        if not opt.built:
            strategy = getattr(model, "distribute_strategy", None)  # optimiser slots mirrored like the weights
            with strategy.scope() if strategy is not None else contextlib.nullcontext():
                opt.build(model.trainable_variables)
        _assign(list(opt.variables), _load_npz(epoch_dir / "optimizer.npz"), f"{epoch_dir.name}/optimizer.npz")


def _keras_callback_base() -> type:
    import keras

    return keras.callbacks.Callback


def make_checkpointer(run_dir: str | Path, monitor: str | None, patience: int | None,
                      order: EpochOrder | None = None, max_minutes: float | None = None) -> Any:
    """A Keras callback that keeps the best weights by `monitor` (max; None: the last epoch), stops early after
    `patience` epochs without improvement or past `max_minutes` of training (summed over resumes), and writes
    the state atomically after every epoch. Use it with `fit_resumable`."""
    base = _keras_callback_base()

    class Checkpointer(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.store = CheckpointStore(run_dir)
            self.state = TrainingState()
            self.order = order
            self._t0 = time.monotonic()
            self._seconds0 = 0.0

        @property
        def best_epoch(self) -> int:
            return self.state.best_epoch

        @property
        def seconds(self) -> float:
            return self.state.seconds

        def resume(self, model: Any) -> TrainingState:
            """Restore the newest complete state into `model` (if any); returns it."""
            found = self.store.latest()
            if found is None:
                return self.state
            state, epoch_dir = found
            if state.stop_reason and not state.finished:  # stopped early, killed before it was marked ended
                state.finished = True
            if epoch_dir is not None:
                try:
                    self.store.restore(model, epoch_dir)
                except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
                    raise ConfigError(f"{run_dir}: cannot resume from {CKPT_DIR}/{epoch_dir.name} ({exc}); "
                                      "use --overwrite to start again") from None
            self.state = state
            self._seconds0 = state.seconds
            return state

        def on_train_begin(self, logs: dict | None = None) -> None:
            self._t0 = time.monotonic()

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            if self.order is not None:
                self.order.epoch = epoch

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = dict(logs or {})
            st = self.state
            score = logs.get(monitor) if monitor else float(epoch)
            if score is not None and math.isfinite(float(score)) and (st.best_score is None
                                                                     or float(score) > st.best_score):
                st.best_score, st.best_epoch = float(score), epoch
                st.best_file = self.store.write_best(self.model, epoch)
            st.history = st.history[:epoch] + [{"epoch": epoch, **{k: _plain(v) for k, v in sorted(logs.items())}}]
            st.epochs_done = epoch + 1
            st.seconds = round(self._seconds0 + time.monotonic() - self._t0, 3)
            if patience is not None and st.best_epoch >= 0 and epoch - st.best_epoch >= patience and epoch > 0:
                st.stop_reason = f"no improvement of {monitor} for {patience} epochs"
                self.model.stop_training = True
            elif max_minutes and st.seconds > 60 * max_minutes:
                LOGGER.warning(f"time budget of {max_minutes} min reached after epoch {epoch + 1}; stopping")
                st.stop_reason = "time budget"
                self.model.stop_training = True
            self.store.write_epoch(self.model, st)

        def finish(self, model: Any) -> None:
            """Training ended: mark it so, and leave the model at the best epoch's weights."""
            self.store.write_finished(self.state)
            try:
                self.store.load_best(model, self.state)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
                raise ConfigError(f"{run_dir}: the best epoch's weights ({CKPT_DIR}/{self.state.best_file}) cannot "
                                  f"be read ({exc}); use --overwrite to train again") from None

    return Checkpointer()


def _plain(v: Any) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def fit_resumable(model: Any, data: Any, epochs: int, callbacks: list[Any], verbose: int | str = 0,
                  **fit_kwargs: Any) -> float:
    """`model.fit` that resumes from the RUN's checkpoint (found among `callbacks`): continues after the last
    complete epoch, or, when training had already ended, only restores the best weights. Returns the training
    seconds summed over every attempt."""
    ck = next(c for c in callbacks if hasattr(c, "resume") and hasattr(c, "store"))
    state = ck.resume(model)
    if state.finished or state.epochs_done >= epochs:
        LOGGER.info(f"training had already ended after {state.epochs_done} epochs; reusing its best epoch")
    else:
        model.fit(data, epochs=epochs, initial_epoch=state.epochs_done, callbacks=callbacks, verbose=verbose,
                  **fit_kwargs)
    ck.finish(model)
    return ck.seconds
