"""Time to accuracy of the default recipe: `meddx.train.fit.train` with the default `TrainConfig`.

Targets: validation AUC >= 0.90 on BreastMNIST (train/val npz; the val split is meddx's
validation split) and validation accuracy >= 0.98 on MedNIST (folder-per-class; meddx carves
its own 15 % validation split).

Method (measured, not estimated): this script calls `train()` in-process and appends ONE extra
Keras callback to the list `train()` builds (by wrapping `meddx.train.fit._make_callbacks`;
src is unchanged). The callback records a wall-clock timestamp at the end of every epoch,
after meddx's own validation callback has added val_auc/val_acc to the logs, and stops training
once the target is met (or a safety cap is hit) so the suite stays short. Nothing else in the
recipe changes: the cosine schedule still spans the epochs `train()` planned. Reported:
- fit->target: seconds from the start of `model.fit` to the end of the first epoch meeting the
  target (includes per-epoch validation, checkpointing and CSV logging, as a user sees it);
- call->target: the same from the `train()` call (adds reading/preprocessing the data and
  building the model; MedNIST is read cold: MEDDX_CACHE points to an empty temp folder).

Run:  python benchmarks/time_to_accuracy.py [--quick]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, machine_info, parser, print_header, table, write_results  # noqa: E402


def run_to_target(data: Path, metric: str, target: float, cap_minutes: float, work: Path,
                  cfg_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train with the default recipe until `metric` >= `target` (or the cap); per-epoch timestamps."""
    import keras

    import meddx.train.fit as fit
    from meddx.train.config import TrainConfig

    marks: dict[str, float] = {}
    epochs: list[dict[str, Any]] = []

    class TargetClock(keras.callbacks.Callback):
        def on_train_begin(self, logs: dict | None = None) -> None:
            marks["fit_start"] = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            now = time.perf_counter()
            epochs.append({"epoch": epoch + 1, "t_fit_s": now - marks["fit_start"],
                           "val_auc": float(logs.get("val_auc", float("nan"))),
                           "val_acc": float(logs.get("val_acc", float("nan"))), "loss": float(logs.get("loss", 0))})
            if epochs[-1][metric] >= target and "hit" not in marks:
                marks["hit"] = now
                self.model.stop_training = True
            elif now - marks["fit_start"] > 60 * cap_minutes:
                self.model.stop_training = True

    original = fit._make_callbacks

    def with_clock(*a: Any, **kw: Any) -> list[Any]:
        return [*original(*a, **kw), TargetClock()]

    cfg = TrainConfig().updated(cfg_overrides or {})
    fit._make_callbacks = with_clock
    lines: list[str] = []
    t_call = time.perf_counter()
    try:
        info = fit.train(str(data), work / "run", cfg, overwrite=True, log=lines.append, verbose=0)
    finally:
        fit._make_callbacks = original
    t_end = time.perf_counter()
    planned = info["config"]["epochs"]
    hit = "hit" in marks
    best = max(e[metric] for e in epochs) if epochs else float("nan")
    return {
        "data": data.name, "metric": metric, "target": target, "reached": hit,
        "epochs_to_target": next((e["epoch"] for e in epochs if e[metric] >= target), None),
        "epochs_planned": planned, "epochs_run": len(epochs),
        "fit_to_target_min": (marks["hit"] - marks["fit_start"]) / 60 if hit else None,
        "call_to_target_min": (marks["hit"] - t_call) / 60 if hit else None,
        "setup_s": marks["fit_start"] - t_call, "total_min": (t_end - t_call) / 60,
        "epoch_s_median": _median_epoch(epochs), f"best_{metric}": best,
        "cap_minutes": cap_minutes, "train_cases": info["data"]["summary"].get("splits", {}).get("train", {}).get("n"), "epochs": epochs,
        "log": lines,
    }


def _median_epoch(epochs: list[dict[str, Any]]) -> float | None:
    import numpy as np

    t = [e["t_fit_s"] for e in epochs]
    return float(np.median(np.diff([0.0, *t]))) if t else None


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    info = machine_info()
    print_header("time to accuracy (default TrainConfig)", info)
    breast = SHARED_DATA / "medmnist" / "breastmnist_trainval.npz"
    mednist = SHARED_DATA / "mednist"
    jobs = []
    if breast.is_file():
        jobs.append((breast, "val_auc", 0.90, 0.4 if args.quick else 4.0, {"epochs": 2} if args.quick else {}))
    if mednist.is_dir() and not args.quick:
        jobs.append((mednist, "val_acc", 0.98, 5.0, {}))
    if not jobs:
        print(f"skipped: real data not found under {SHARED_DATA}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="meddx-bench-tta-") as tmp:
        os.environ["MEDDX_CACHE"] = str(Path(tmp) / "cache")  # cold read of file datasets
        from meddx.train.fit import configure_tensorflow

        configure_tensorflow(seed=0)
        for data, metric, target, cap, over in jobs:
            work = Path(tmp) / data.stem
            work.mkdir()
            r = run_to_target(data, metric, target, cap, work, over)
            print(f"  {data.name}: {'reached' if r['reached'] else 'NOT reached'} {metric} {target} "
                  f"(best {r['best_' + metric]:.4f}) after {r['epochs_run']} epochs, {r['total_min']:.2f} min",
                  flush=True)
            rows.append(r)
    cols = ["data", "metric", "target", "reached", "epochs_to_target", "epochs_planned", "fit_to_target_min",
            "call_to_target_min", "setup_s", "epoch_s_median"]
    text = table(rows, cols)
    print("\nfit_to_target: from model.fit start to the end of the first epoch meeting the target "
          "(measured by an epoch-end callback); call_to_target adds data reading + model build")
    print(text)
    write_results(args, "time_to_accuracy", info, {"rows": rows}, {"time_to_accuracy": text})
    return 0


if __name__ == "__main__":
    sys.exit(main())
