"""Child process of the training fault-injection tests: trains a tiny synthetic RUN and SIGKILLs itself at one
chosen point (MEDDX_FAULT="<window>:<epoch>[:<batch>]"), exactly as a power cut or OOM killer would.

Windows: batch (inside an epoch), best (new best weights written, epoch state not yet), epoch_tmp (epoch state
written under its temporary name, not yet renamed), epoch (epoch state complete), finished (training marked ended),
run_json (model.keras written, run.json not yet). Usage: train_child.py DATA.npz OUT_DIR EPOCHS PATIENCE.
"""

from __future__ import annotations

import logging
import os
import signal
import sys


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    data, out, epochs, patience = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    fault = os.environ.get("MEDDX_FAULT", "")
    window, epoch, batch = (fault.split(":") + ["0", "0"])[:3] if fault else ("", "0", "0")
    epoch_n, batch_n = int(epoch), int(batch)

    import keras

    from meddx.io import run_info
    from meddx.train import checkpoints
    from meddx.train.config import TrainConfig
    from meddx.train.fit import train

    store = checkpoints.CheckpointStore
    extra = []
    if window == "batch":
        class KillInBatch(keras.callbacks.Callback):
            def on_epoch_begin(self, e, logs=None):
                self.e = e

            def on_train_batch_end(self, b, logs=None):
                if self.e == epoch_n and b == batch_n:
                    _die()

        extra.append(KillInBatch())
    elif window == "best":
        orig_best = store.write_best

        def write_best(self, model, e):
            name = orig_best(self, model, e)
            if e == epoch_n:
                _die()
            return name

        store.write_best = write_best
    elif window == "epoch_tmp":
        orig_fsync = checkpoints._fsync_dir

        def fsync_dir(path):
            orig_fsync(path)
            if path.name.startswith(f".tmp-epoch-{epoch_n + 1:04d}-"):
                _die()

        checkpoints._fsync_dir = fsync_dir
    elif window == "epoch":
        orig_epoch = store.write_epoch

        def write_epoch(self, model, state):
            orig_epoch(self, model, state)
            if state.epochs_done == epoch_n + 1:
                _die()

        store.write_epoch = write_epoch
    elif window == "finished":
        orig_fin = store.write_finished

        def write_finished(self, state):
            orig_fin(self, state)
            _die()

        store.write_finished = write_finished
    elif window == "run_json":
        def write(self, run_dir):
            _die()

        run_info.RunInfo.write = write
    cfg = TrainConfig(epochs=epochs, batch_size=16, seed=3, patience=patience, threads=1, augment="flip")
    info = train(data, out, cfg, verbose=0, log=print, extra_callbacks=extra)
    print(f"DONE best_epoch={info['best_epoch']} epochs_run={info['epochs_run']}")


if __name__ == "__main__":
    main()
