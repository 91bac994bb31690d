"""TF thread settings: training and inference speed for intra-op {1, 2} x inter-op {1, 2}.

TensorFlow fixes its thread pools when it starts, so each setting runs in a fresh worker
process (this script re-invoked with --worker). Each worker, with the default `cnn` at 28 px:
- training: meddx's pipeline (make_tf_dataset + flip + class weights, compile as train()),
  images/s = median of the epochs after a warm-up epoch;
- inference, batch: `model.predict(x, batch_size=128)` images/s (median of 3 after warm-up);
- inference, one image: `model.predict(x[:1])` latency p50 (what `Classifier.predict` does per 2D image).
meddx's training default (configure_tensorflow with threads=None) leaves intra-op at TF's default
(all cores) and sets inter-op to min(2, cores); on this machine that is intra 2 / inter 2 (the
`meddx_default` column). Inference (`meddx.infer.load`: evaluate, predict, report) uses inter-op 1, the
faster setting for both predict columns in every run so far.
One worker per setting (a single round, to keep the suite short: on a shared machine treat
differences under ~15 % as noise). --quick runs only 1/1 and 2/2.

Run:  python benchmarks/threads.py [--quick]
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, median, parser, print_header, table, write_results  # noqa: E402

SETTINGS = [(1, 1), (1, 2), (2, 1), (2, 2)]


def worker(intra: int, inter: int, quick: bool) -> dict[str, Any]:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    import keras

    from meddx.models.registry import build_model
    from meddx.train.fit import class_weight_dict, make_tf_dataset
    from meddx.transforms.augment import Augmenter
    from training_throughput import BATCH, EpochTimer, compile_like_train

    keras.utils.set_random_seed(0)
    shape = (28, 28, 1)
    n = 128 if quick else 640
    epochs = 2 if quick else 4
    rng = np.random.default_rng(0)
    x = rng.random((n, *shape), dtype=np.float32)
    y = (rng.random(n) < 0.3).astype(np.float32).reshape(-1, 1)
    model = build_model("cnn", shape, 2, task="binary", dropout=0.3)
    compile_like_train(model, math.ceil(n / BATCH), epochs)
    timer = EpochTimer()
    ds = make_tf_dataset(x, y, BATCH, 0, Augmenter.from_preset("flip", 2, seed=0))
    model.fit(ds, epochs=epochs, class_weight=class_weight_dict(y, "binary"), verbose=0, callbacks=[timer])
    train_ips = n / median(timer.times[1:])

    xb = rng.random((512 if quick else 2048, *shape), dtype=np.float32)
    model.predict(xb[:256], batch_size=128, verbose=0)
    bt = []
    for _ in range(1 if quick else 3):
        t = time.perf_counter()
        model.predict(xb, batch_size=128, verbose=0)
        bt.append(time.perf_counter() - t)
    model.predict(xb[:1], verbose=0)
    lat = []
    for _ in range(5 if quick else 30):
        t = time.perf_counter()
        model.predict(xb[:1], verbose=0)
        lat.append(time.perf_counter() - t)
    return {"intra": intra, "inter": inter, "train_img_s": train_ips, "predict_img_s": len(xb) / median(bt),
            "one_image_ms": 1000 * median(lat)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        intra, inter, quick = int(argv[1]), int(argv[2]), argv[3] == "1"
        print("RESULT " + json.dumps(worker(intra, inter, quick)))
        return 0
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    info = machine_info()
    print_header("TF thread settings (intra-op x inter-op), training and inference", info)
    order = [(1, 1), (2, 2)] if args.quick else SETTINGS
    found: dict[tuple[int, int], list[dict[str, Any]]] = {s: [] for s in SETTINGS}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    for intra, inter in order:
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--worker", str(intra), str(inter), str(int(args.quick))],
                              capture_output=True, text=True, env=env, check=False)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
            raise SystemExit(f"worker intra={intra} inter={inter} failed (exit {proc.returncode})")
        found[(intra, inter)].append(json.loads(line[7:]))
        print(f"  intra {intra} / inter {inter}: {time.perf_counter() - t:.0f} s", flush=True)
    rows = []
    for (intra, inter), rs in found.items():
        if not rs:
            continue
        rows.append({"intra_op": intra, "inter_op": inter,
                     "train_img_s": median([r["train_img_s"] for r in rs]),
                     "predict_img_s": median([r["predict_img_s"] for r in rs]),
                     "one_image_ms": median([r["one_image_ms"] for r in rs]),
                     "meddx_default": (intra, inter) == (2, 2), "rounds": len(rs), "raw": rs})
    best = {k: max(rows, key=(lambda r: r[k]) if k != "one_image_ms" else (lambda r: -r[k]))
            for k in ("train_img_s", "predict_img_s", "one_image_ms")}
    default = next(r for r in rows if r["meddx_default"])
    for r in rows:
        r["train_vs_default"] = r["train_img_s"] / default["train_img_s"]
        r["predict_vs_default"] = r["predict_img_s"] / default["predict_img_s"]
    cols = ["intra_op", "inter_op", "train_img_s", "train_vs_default", "predict_img_s", "predict_vs_default",
            "one_image_ms", "meddx_default", "rounds"]
    text = table(rows, cols)
    fastest = {k: f"intra {b['intra_op']} / inter {b['inter_op']}" for k, b in best.items()}
    print("\ncnn 28 px, batch 64 training (meddx pipeline), batch 128 predict, one-image predict; "
          "meddx_default = what configure_tensorflow() gives on this machine")
    print(text)
    print("fastest: " + "; ".join(f"{k}: {v}" for k, v in fastest.items()))
    write_results(args, "threads", info, {"rows": rows, "fastest": fastest}, {"threads": text})
    return 0


if __name__ == "__main__":
    sys.exit(main())
