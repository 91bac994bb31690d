"""Inference: end-to-end latency of `meddx.infer` (read + `Classifier.predict`), batch throughput, peak memory.

A RUN is trained inside the benchmark (default `cnn`, 64 px, a few epochs on synthetic lesion
slices from `meddx.data.synthetic`, written as PNGs); accuracy is irrelevant here. Then:
- 2D: one PNG end to end (read, preprocess, predict; `heatmap=False`), and the same with Grad-CAM;
- CT: the real 129-slice abdominal CT series (`dicom/ct_abdomen_ircadb`) end to end: read the
  DICOM folder, preprocess every slice, predict slice-wise, Grad-CAM heatmap resized to 512x512
  per slice, lesion extraction (`heatmap=True`);
- batch throughput of `Classifier.predict_proba` on preprocessed 64 px images (batch 128);
- peak RSS per stage: the kernel's VmHWM, reset before each stage via /proc/self/clear_refs
  (falls back to the process-lifetime ru_maxrss where that is unsupported).
Latencies are p50/p95 over repeated calls after one warm-up call (which is reported separately).

Run:  python benchmarks/inference.py [--quick]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (SHARED_DATA, machine_info, median, parser, peak_rss_mib, percentile,  # noqa: E402
                     print_header, reset_peak_rss, rss_mib, table, write_results)


def train_quick_run(work: Path, quick: bool) -> tuple[Path, Path]:
    """A small RUN folder (synthetic PNG slices, 64 px) and one PNG to predict."""
    from meddx.data.datasets import load_manifest
    from meddx.data.synthetic import CLASS_NAMES, write_synthetic_folder
    from meddx.train.config import TrainConfig
    from meddx.train.fit import train

    manifest = write_synthetic_folder(work / "data", n=96 if quick else 300, size=64, seed=0)
    ds = load_manifest(manifest, class_names=CLASS_NAMES)
    cfg = TrainConfig(epochs=1 if quick else 3, image_size=64, seed=0)
    train(ds, work / "run", cfg, overwrite=True, log=lambda s: None, verbose=0)
    png = next(p for p in sorted((work / "data").rglob("*.png")) if not p.name.endswith("_mask.png"))
    return work / "run", png


def latency(fn: Any, repeats: int) -> dict[str, Any]:
    """Warm-up call, then `repeats` timed calls; p50/p95 and peak RSS of the stage."""
    reset_ok = reset_peak_rss()
    rss0 = rss_mib()
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"first_s": first, "p50_s": median(times), "p95_s": percentile(times, 95), "runs": repeats,
            "peak_rss_mib": peak_rss_mib(), "rss_before_mib": rss0, "peak_is_per_stage": reset_ok,
            "times_s": [round(v, 4) for v in times]}


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    info = machine_info()
    print_header("inference (read + predict end to end)", info)
    from meddx.train.fit import configure_tensorflow

    configure_tensorflow(seed=0)
    from meddx.infer import load
    from meddx.io import read_image

    def predict_study(predictor: Any, path: Path, heatmap: bool) -> dict[str, Any]:
        """One study end to end: read, preprocess, predict (+ Grad-CAM and lesions), as `meddx report` does."""
        return predictor.predict(read_image(path), heatmap=heatmap).to_study(str(path))

    ct = SHARED_DATA / "dicom" / "ct_abdomen_ircadb"
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="meddx-bench-inf-") as tmp:
        t0 = time.perf_counter()
        run_dir, png = train_quick_run(Path(tmp), args.quick)
        print(f"  trained the benchmark RUN in {time.perf_counter() - t0:.0f} s", flush=True)
        reset_peak_rss()
        t = time.perf_counter()
        run = load(run_dir)
        load_s = time.perf_counter() - t
        rows.append({"stage": "load (model.keras + run.json)", "first_s": load_s, "p50_s": None, "p95_s": None,
                     "runs": 1, "peak_rss_mib": peak_rss_mib()})
        n2d = 5 if args.quick else 30
        rows.append({"stage": "2D PNG: read+preprocess+predict", **latency(
            lambda: predict_study(run, png, heatmap=False), n2d)})
        rows.append({"stage": "2D PNG: ... + Grad-CAM", **latency(
            lambda: predict_study(run, png, heatmap=True), n2d)})
        if ct.is_dir():
            nct = 1 if args.quick else 5
            rows.append({"stage": "CT 129 slices: read+prep+predict+Grad-CAM", **latency(
                lambda: predict_study(run, ct, heatmap=True), nct)})
            rows.append({"stage": "CT 129 slices: read+prep+predict", **latency(
                lambda: predict_study(run, ct, heatmap=False), nct)})
            # where the CT time goes (one pass, each step alone)
            from meddx.explain import explain

            steps: dict[str, float] = {}
            t = time.perf_counter()
            img = read_image(ct)
            steps["read_image"] = time.perf_counter() - t
            t = time.perf_counter()
            x = run.preprocessing.batch([img.array[k] for k in range(img.array.shape[0])], progress=False)
            steps["preprocess"] = time.perf_counter() - t
            t = time.perf_counter()
            run.predict_proba(x)
            steps["predict"] = time.perf_counter() - t
            t = time.perf_counter()
            heat_small = explain(run.model, x, method="gradcam", class_index=1)
            steps["gradcam"] = time.perf_counter() - t
            from meddx.explain import heatmap_to_lesions
            from meddx.infer.display import grey_display, resize_to

            t = time.perf_counter()
            display = grey_display(img)
            steps["display window (percentiles)"] = time.perf_counter() - t
            t = time.perf_counter()
            heat = np.stack([resize_to(h, display.shape[1:]).astype(np.float32) for h in heat_small])
            heat = heat / max(float(heat.max()), 1e-8)
            steps["heatmap resize to 512x512 x129"] = time.perf_counter() - t
            t = time.perf_counter()
            heatmap_to_lesions(heat, threshold=0.5, spacing=img.spacing, max_lesions=5)
            steps["heatmap_to_lesions"] = time.perf_counter() - t
            for k, v in steps.items():
                rows.append({"stage": f"  CT step: {k}", "first_s": None, "p50_s": v, "p95_s": None, "runs": 1})
        else:
            print(f"  CT series absent ({ct}); skipped")
        # batch throughput on preprocessed images
        nb = 256 if args.quick else 2048
        xb = np.random.default_rng(0).random((nb, *run.preprocessing.output_shape), dtype=np.float32)
        run.predict_proba(xb[:128])
        reset_peak_rss()
        times = []
        for _ in range(1 if args.quick else 3):
            t = time.perf_counter()
            run.predict_proba(xb, batch_size=128)
            times.append(time.perf_counter() - t)
        throughput = {"images": nb, "batch_size": 128, "images_per_s": nb / median(times),
                      "peak_rss_mib": peak_rss_mib(), "times_s": times}
    cols = ["stage", "first_s", "p50_s", "p95_s", "runs", "peak_rss_mib"]
    text = table(rows, cols)
    ttext = table([{"batch throughput (64 px, predict_proba)": f"{throughput['images_per_s']:.0f} images/s",
                    "images": nb, "batch": 128, "peak_rss_mib": throughput["peak_rss_mib"]}])
    print("\nseconds; first = first call (includes tracing); p50/p95 over the repeated calls; "
          "peak RSS per stage (VmHWM reset before each)")
    print(text)
    print(ttext)
    write_results(args, "inference", info, {"rows": rows, "batch_throughput": throughput,
                                            "model": run.info.model, "input_shape": run.info.input_shape},
                  {"latency": text, "throughput": ttext})
    return 0


if __name__ == "__main__":
    sys.exit(main())
