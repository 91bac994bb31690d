"""Training throughput: meddx's tf.data pipeline vs plain in-memory `model.fit(x, y)`, plus GFLOP/s vs peak.

For the default 2D model (`cnn`) at 28 px and 64 px and the default 3D model (`cnn`) at 28^3:
- meddx:     `meddx.train.fit.make_tf_dataset` with the default flip augmentation
             (`Augmenter.from_preset("flip")`), balanced class weights precomputed as per-case sample
             weights in the dataset (what `train()` does), and the same compile as `train()` (AdamW +
             cosine decay, BCE from logits, jit_compile False);
- reference: the same architecture and compile fed NumPy arrays with plain
             `model.fit(x, y, batch_size=64)` (the framework's ceiling on this machine);
- diagnostic row (2D only, to save time): meddx's earlier path, the same pipeline without the
  weights but with Keras's `class_weight=` (a per-batch lookup inside `fit`). An earlier diagnostic
  (flip as a TF graph op instead of `tf.numpy_function`) was slower than the numpy flip and was dropped.
images/s is the median over the timed epochs (the first epoch of every fit call is a warm-up
and not counted); the variants run interleaved, round by round. GFLOP/s = images/s x training
FLOPs per image (3 x forward, forward = 2 x MACs of conv/dense layers counted from layer
shapes); peak = best of a large float32 matmul in NumPy and in TensorFlow.

Run:  python benchmarks/training_throughput.py [--quick]
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import EpochTimer, machine_info, median, parser, print_header, table, write_results  # noqa: E402

BATCH = 64  # CLASSIFIER_DEFAULTS["batch_size"]


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Best-of-`repeats` float32 n x n matmul rate (2 n^3 FLOP) in NumPy and in TensorFlow."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    flop = 2.0 * n**3
    a @ b  # warm-up
    best_np = min(_t(lambda: a @ b) for _ in range(repeats))
    ta, tb = tf.constant(a), tf.constant(b)
    tf.linalg.matmul(ta, tb).numpy()
    best_tf = min(_t(lambda: tf.linalg.matmul(ta, tb).numpy()) for _ in range(repeats))
    return {"numpy": flop / best_np / 1e9, "tensorflow": flop / best_tf / 1e9, "n": n}


def _t(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def model_flops(model: Any) -> dict[str, float]:
    """Forward FLOPs per sample = 2 x MACs of Conv (1D/2D/3D, incl. strides) and Dense layers."""
    import keras

    macs = 0.0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)) and not isinstance(
                layer, (keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)):
            kernel = layer.kernel.shape  # (*k, cin/groups, cout)
            out = layer.output.shape[1:]  # (*spatial, cout)
            macs += math.prod(out[:-1]) * out[-1] * math.prod(kernel[:-1])
        elif isinstance(layer, keras.layers.Dense):
            cin, cout = layer.kernel.shape
            macs += cin * cout
    fwd = 2.0 * macs
    return {"forward_flops": fwd, "train_flops": 3.0 * fwd}


def compile_like_train(model: Any, steps_per_epoch: int, epochs: int) -> None:
    """Exactly the optimizer/loss/compile of meddx.train.fit.train() with the default TrainConfig (binary task)."""
    import keras

    from meddx.train.config import CLASSIFIER_DEFAULTS, TrainConfig, with_defaults

    cfg = with_defaults(TrainConfig(), CLASSIFIER_DEFAULTS)
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=epochs * steps_per_epoch,
                                                      alpha=0.01)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=cfg.weight_decay)
    model.compile(optimizer=optimizer, loss=keras.losses.BinaryCrossentropy(from_logits=True),
                  jit_compile=cfg.jit_compile)


def bench_config(name: str, shape: tuple[int, ...], n: int, rounds: int, epochs_per_fit: int,
                 diagnose: bool) -> list[dict[str, Any]]:
    """Interleaved rounds of every variant on one input shape; one row per variant."""
    import keras

    from meddx.models.registry import build_model
    from meddx.train.fit import class_sample_weights, class_weight_dict, make_tf_dataset
    from meddx.transforms.augment import Augmenter

    ndim = len(shape) - 1
    rng = np.random.default_rng(0)
    x = rng.random((n, *shape), dtype=np.float32)
    y = (rng.random(n) < 0.3).astype(np.float32).reshape(-1, 1)  # imbalanced, like MedMNIST
    cw = class_weight_dict(y, "binary")
    steps = math.ceil(n / BATCH)
    total_epochs = rounds * epochs_per_fit

    REF = "reference: model.fit(numpy)"
    variants: dict[str, dict[str, Any]] = {
        REF: {"fit": lambda m, e: m.fit(x, y, batch_size=BATCH, epochs=e, verbose=0,
                                                                   shuffle=True, callbacks=[timers[REF]])},
        "meddx: make_tf_dataset+flip+weights": {
            "data": make_tf_dataset(x, y, BATCH, 0, Augmenter.from_preset("flip", ndim, seed=0),
                                    sample_weight=class_sample_weights(y, "binary")),
            "cw": None},
    }
    if diagnose:
        variants["diag: old path, Keras class_weight"] = {
            "data": make_tf_dataset(x, y, BATCH, 0, Augmenter.from_preset("flip", ndim, seed=0)), "cw": cw}

    models: dict[str, Any] = {}
    timers: dict[str, Any] = {}
    for v in variants:
        keras.utils.set_random_seed(0)
        m = build_model("cnn", shape, 2, task="binary", dropout=0.3)
        compile_like_train(m, steps, total_epochs)
        models[v] = m
        timers[v] = EpochTimer()
    flops = model_flops(next(iter(models.values())))

    for _ in range(rounds):
        for v, spec in variants.items():
            m = models[v]
            timers[v].times.append(None)  # marks the start of a fit call
            if "fit" in spec:
                spec["fit"](m, epochs_per_fit)
            else:
                m.fit(spec["data"], epochs=epochs_per_fit, class_weight=spec["cw"], verbose=0,
                      callbacks=[timers[v]])

    rows = []
    ref_ips = None
    for v in variants:
        times = timers[v].times
        timed_epochs: list[float] = []
        first = False
        for t in times:
            if t is None:
                first = True
                continue
            if first:  # warm-up epoch of this fit call
                first = False
                continue
            timed_epochs.append(t)
        ips = n / median(timed_epochs)
        if ref_ips is None:
            ref_ips = ips
        rows.append({"config": name, "variant": v, "images_per_s": ips,
                     "vs_reference": ips / ref_ips,
                     "train_gflops_per_s": ips * flops["train_flops"] / 1e9,
                     "epoch_s_median": median(timed_epochs), "epochs_timed": len(timed_epochs),
                     "epoch_s_all": [round(t, 3) for t in timed_epochs]})
    for r in rows:
        r["train_mflop_per_image"] = flops["train_flops"] / 1e6
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    info = machine_info()
    print_header("training throughput (meddx pipeline vs in-memory model.fit)", info)
    from meddx.train.fit import configure_tensorflow

    configure_tensorflow(seed=0)  # meddx's own thread defaults, as train() uses them
    import tensorflow as tf

    info["tf_threads"] = {"intra": tf.config.threading.get_intra_op_parallelism_threads(),
                          "inter": tf.config.threading.get_inter_op_parallelism_threads()}
    peak = matmul_peak_gflops(n=1024 if args.quick else 2048, repeats=3 if args.quick else 5)
    peak_best = max(peak["numpy"], peak["tensorflow"])
    print(f"peak float32 matmul ({peak['n']}^2): numpy {peak['numpy']:.1f} GFLOP/s, "
          f"tensorflow {peak['tensorflow']:.1f} GFLOP/s")

    # (name, input shape, images per epoch, rounds, epochs per fit call, diagnostic variant?)
    if args.quick:
        configs = [("2D cnn 28px", (28, 28, 1), 128, 1, 2, True), ("3D cnn 12^3", (12, 12, 12, 1), 64, 1, 2, False)]
    else:
        configs = [("2D cnn 28px", (28, 28, 1), 640, 2, 3, True), ("2D cnn 64px", (64, 64, 1), 512, 2, 3, True),
                   ("3D cnn 28^3", (28, 28, 28, 1), 64, 2, 2, False)]
    rows: list[dict[str, Any]] = []
    for name, shape, n, rounds, epochs_per_fit, diagnose in configs:
        t0 = time.perf_counter()
        rows += bench_config(name, shape, n, rounds, epochs_per_fit, diagnose)
        print(f"  {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    for r in rows:
        r["pct_of_peak"] = 100.0 * r["train_gflops_per_s"] / peak_best
    cols = ["config", "variant", "images_per_s", "vs_reference", "train_mflop_per_image", "train_gflops_per_s",
            "pct_of_peak", "epochs_timed"]
    text = table(rows, cols)
    print(f"\nbatch {BATCH}; images/s = median over timed epochs; vs_reference = meddx / plain model.fit "
          f"(target >= 0.90); peak {peak_best:.1f} GFLOP/s")
    print(text)
    summary = []
    for name, *_ in configs:  # noqa: B007
        ref = next(r for r in rows if r["config"] == name and r["variant"].startswith("reference"))
        med = next(r for r in rows if r["config"] == name and r["variant"].startswith("meddx"))
        summary.append({"config": name, "meddx_img_s": med["images_per_s"], "reference_img_s": ref["images_per_s"],
                        "ratio": med["vs_reference"], "within_10pct": med["vs_reference"] >= 0.9})
    stext = table(summary)
    print("\n" + stext)
    write_results(args, "training_throughput", info, {"peak_gflops": peak, "batch_size": BATCH, "rows": rows,
                                                      "summary": summary}, {"throughput": text, "summary": stext})
    return 0


if __name__ == "__main__":
    sys.exit(main())
