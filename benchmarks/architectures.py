"""Default-architecture choice: speed vs accuracy of the 2D candidates, and jit_compile / mixed precision.

Part 1 (accuracy for a fixed time): each candidate model trains with the default `TrainConfig` on
BreastMNIST (../shared/data, 28 px) for up to 20 epochs within the same wall-clock budget (3 min;
`max_minutes`); reported: validation AUC of the selected epoch, epochs done, training images/s
(median epoch), parameters, minutes. Candidates: `cnn` (the
default), `resnet18`, `densenet121`, and the `cnn` with a global-max head.
Part 2 (compile options, same run): training images/s of the default `cnn` at 28 px and 64 px
through meddx's pipeline with jit_compile False (default) vs True, and with the
`mixed_float16` policy, interleaved round by round.

Run:  python benchmarks/architectures.py [--quick]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, EpochTimer, machine_info, median, parser, print_header, table, write_results  # noqa: E402

CANDIDATES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("cnn (default)", "cnn", None),
    ("cnn, global-max head", "cnn", {"pooling": "max"}),
    ("resnet18", "resnet18", None),
    ("densenet121", "densenet121", None),
]


def accuracy_per_second(data: Path, epochs: int, minutes_budget: float, work: Path) -> list[dict[str, Any]]:
    """Train each candidate (<= `epochs`, <= `minutes_budget`) with the default recipe; val AUC, images/s, ..."""
    from meddx.train.config import TrainConfig
    from meddx.train.fit import train

    rows = []
    for label, model, options in CANDIDATES:
        clock = EpochTimer()
        t0 = time.perf_counter()
        info = train(str(data), work / label.replace(" ", "_").replace(",", ""),
                     TrainConfig(model=model, epochs=epochs, model_options=options, seed=0,
                                 max_minutes=minutes_budget),
                     overwrite=True, log=lambda s: None, verbose=0, extra_callbacks=[clock])
        minutes = (time.perf_counter() - t0) / 60
        n_train = info["data"]["summary"]["splits"]["train"]["n"]
        from meddx.infer import load as load_run

        params = load_run(work / label.replace(" ", "_").replace(",", "")).model.count_params()
        rows.append({"model": label, "val_auc": info["val_metrics"].get("auc"), "epochs": info["epochs_run"],
                     "best_epoch": info.get("best_epoch"), "train_img_s": n_train / median(clock.times[1:] or clock.times),
                     "params_k": params / 1e3, "minutes": minutes})
        print(f"  {label}: val AUC {rows[-1]['val_auc']:.3f}, {rows[-1]['train_img_s']:.0f} img/s, "
              f"{minutes:.1f} min", flush=True)
    return rows


def compile_options(sizes: list[int], rounds: int, n: int) -> list[dict[str, Any]]:
    """Training images/s of the default cnn: jit_compile off / on, and mixed_float16, interleaved."""
    import keras

    from meddx.models.registry import build_model
    from meddx.train.fit import class_sample_weights, make_tf_dataset
    from meddx.transforms.augment import Augmenter

    rows = []
    for size in sizes:
        rng = np.random.default_rng(0)
        x = rng.random((n, size, size, 1), dtype=np.float32)
        y = (rng.random(n) < 0.3).astype(np.float32).reshape(-1, 1)
        data = make_tf_dataset(x, y, 64, 0, Augmenter.from_preset("flip", 2, seed=0),
                               sample_weight=class_sample_weights(y, "binary"))
        variants = {"float32, jit off (default)": ("float32", False), "float32, jit_compile=True": ("float32", True),
                    "mixed_float16, jit off": ("mixed_float16", False)}
        models, clocks = {}, {}
        for name, (policy, jit) in variants.items():
            keras.mixed_precision.set_global_policy(policy)
            keras.utils.set_random_seed(0)
            m = build_model("cnn", (size, size, 1), 2, task="binary")
            m.compile(optimizer=keras.optimizers.AdamW(2e-3), loss=keras.losses.BinaryCrossentropy(from_logits=True),
                      jit_compile=jit)
            keras.mixed_precision.set_global_policy("float32")
            models[name], clocks[name] = m, []
        for _ in range(rounds):
            for name, m in models.items():
                clock = EpochTimer()
                m.fit(data, epochs=2, verbose=0, callbacks=[clock])
                clocks[name].append(clock.times[-1])  # the second epoch: compiled and warm
        ref = None
        for name in variants:
            ips = n / median(clocks[name])
            ref = ref or ips
            rows.append({"size": f"{size} px", "variant": name, "train_img_s": ips, "vs_default": ips / ref,
                         "rounds": rounds})
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    info = machine_info()
    print_header("architectures and compile options", info)
    breast = SHARED_DATA / "medmnist" / "breastmnist_trainval.npz"
    payload: dict[str, Any] = {}
    tables: dict[str, str] = {}
    from meddx.train.fit import configure_tensorflow

    configure_tensorflow(seed=0)
    if breast.is_file():
        with tempfile.TemporaryDirectory(prefix="meddx-bench-arch-") as tmp:
            rows = accuracy_per_second(breast, 2 if args.quick else 20, 0.5 if args.quick else 3.0, Path(tmp))
        tables["architectures"] = table(rows, ["model", "val_auc", "best_epoch", "epochs", "train_img_s", "params_k",
                                               "minutes"])
        payload["architectures"] = rows
        print(tables["architectures"])
    else:
        print(f"skip architectures: {breast} is absent")
    rows = compile_options([28] if args.quick else [28, 64], 1 if args.quick else 3, 256 if args.quick else 1024)
    tables["compile_options"] = table(rows)
    payload["compile_options"] = rows
    print(tables["compile_options"])
    write_results(args, "architectures", info, payload, tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
