"""Scaling out: images/s of in-process Keras predict beside the exported runtimes (SavedModel, ONNX Runtime,
OpenVINO f32 and bf16) and Ray actors, top-1 agreement with Keras, and peak RSS of `meddx predict` as the number of
studies grows 10x.

The RUN is the repository's small trained demo classifier (tests/fixtures/runs/demo_cls: cnn, 64x64 grey, binary;
or --run), exported with `meddx.app.export.export_run` (parity-checked). N synthetic 64x64 lesion slices
(`meddx.data.synthetic`) are preprocessed once with the RUN's preprocessing; each runtime then predicts the same
(N, 64, 64, 1) array in batches of --batch (model time only: reading is the same for all). Labels are decided
with the RUN's threshold; "top-1 = Keras" counts studies whose label matches Keras's.

Ray rows (`meddx.app.ray_engine.predict_files_ray`, if present) and the peak-RSS rows are end to end from PNG files
on disk: Ray with 1 and 2 actors against `meddx predict` (local engine) on the same --ray-n files; peak RSS of
`meddx predict RUN FOLDER` in a fresh process per size (--rss-sizes), read from the child's own rusage.

Run:  python benchmarks/scale.py [--n 10000] [--rss-sizes 1000,10000] [--ray-n 1000] [--quick]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, machine_info, parser, print_header, table, write_results  # noqa: E402

DEMO_RUN = REPO_ROOT / "tests" / "fixtures" / "runs" / "demo_cls"
PEAK_CHILD = ("import sys\nfrom meddx.cli import main\nrc = main(sys.argv[2:])\n"
              "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
              "open(sys.argv[1], 'w').write(hwm)\nsys.exit(rc)\n")  # meddx predict, then its own peak RSS (KiB)
POOL = 2000  # distinct synthetic slices rendered; larger N repeats them with fresh noise (rendering is the slow part)


def make_studies(n: int, seed: int = 0) -> np.ndarray:
    """(n, 64, 64) uint8 synthetic lesion slices: up to POOL rendered ones, the rest copies with added noise."""
    from meddx.data.synthetic import make_synthetic_dataset

    base = make_synthetic_dataset(n=min(n, POOL), size=64, seed=seed, dtype="float32")["images"]
    if n <= len(base):
        return (base * 255).round().astype(np.uint8)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(base), n)
    out = base[idx] + rng.normal(0, 0.03, (n, 64, 64)).astype(np.float32)
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def write_pngs(images: np.ndarray, folder: Path) -> Path:
    """One PNG per study in `folder` (names sorted in study order)."""
    from PIL import Image as PILImage

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        PILImage.fromarray(img, mode="L").save(folder / f"s{i:06d}.png")
    return folder


def throughput(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int) -> tuple[float, np.ndarray]:
    """(images/s, outputs) of `fn` (which batches itself) over all of `x`, after a warm-up call on one batch."""
    fn(x[:batch])
    t0 = time.perf_counter()
    out = np.asarray(fn(x))
    return len(x) / (time.perf_counter() - t0), out


def runtime_rows(run: Path, x: np.ndarray, batch: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """One row per runtime: images/s, speed-up over Keras, top-1 agreement and max |p - p_keras|."""
    from meddx.app.export import export_run
    from meddx.infer import load
    from meddx.infer.runtimes import OpenVinoModel, default_export_dir, open_exported, read_export_meta
    from meddx.models.outputs import logits_to_probs

    clf = load(run, heatmaps=False)
    notes: dict[str, str] = {}
    for fmt in ("savedmodel", "onnx", "openvino"):
        said: list[str] = []
        export_run(run, fmt, log=said.append)
        notes[fmt] = said[0] if said else ""
    def batched(model: Any) -> Callable[[np.ndarray], np.ndarray]:
        return lambda a: model.predict(a, batch_size=batch)

    def keras_calls(a: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(clf.model(a[i: i + batch], training=False))
                               for i in range(0, len(a), batch)])

    ov_dir = default_export_dir(run, "openvino")
    meta = read_export_meta(ov_dir)
    runners: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = [
        ("Keras in-process (model.predict)", lambda a: clf.model.predict(a, batch_size=batch, verbose=0)),
        ("Keras in-process (model(x) per batch)", keras_calls),
        ("SavedModel (tf.saved_model)", batched(open_exported(default_export_dir(run, "savedmodel")))),
        ("ONNX Runtime", batched(open_exported(default_export_dir(run, "onnx")))),
        ("OpenVINO f32", batched(OpenVinoModel(ov_dir, meta, precision="f32"))),
        ("OpenVINO bf16", batched(OpenVinoModel(ov_dir, meta, precision="bf16"))),
    ]
    rows: list[dict[str, Any]] = []
    ref_probs = ref_labels = None
    keras_rate = None
    for name, fn in runners:
        rate, logits = throughput(fn, x, batch)
        probs = logits_to_probs(np.asarray(logits, np.float32), clf.task)
        labels = clf.decide(probs)
        if ref_probs is None:
            ref_probs, ref_labels, keras_rate = probs, labels, rate
        rows.append({"runtime": name, "images/s": rate, "x Keras": rate / keras_rate,
                     "top-1 = Keras": f"{int((labels == ref_labels).sum())}/{len(x)}",
                     "max |p - p_keras|": float(np.abs(probs - ref_probs).max())})
        print(f"  {name}: {rate:,.0f} images/s", flush=True)
    return rows, notes


def ray_rows(run: Path, folder: Path, work: Path) -> list[dict[str, Any]]:
    """End to end from PNG files: `meddx predict` (local engine, in-process API) vs Ray with 1 and 2 actors."""
    files = sorted(folder.iterdir())
    from meddx.app.predict import predict_inputs

    t0 = time.perf_counter()
    predict_inputs(run, [folder], work / "local", log=lambda s: None)
    local = time.perf_counter() - t0
    rows = [{"engine": "local (meddx predict, one process)", "studies": len(files), "seconds": local,
             "studies/s": len(files) / local, "overhead ms/study vs local": 0.0}]
    try:
        from meddx.app.ray_engine import predict_files_ray
    except ImportError as exc:
        return rows + [{"engine": f"Ray: not available ({exc})"}]
    for actors in (1, 2):
        t0 = time.perf_counter()
        try:
            predict_files_ray(run, files, work / f"ray{actors}", actors=actors)
        except Exception as exc:  # noqa: BLE001 -- a benchmark row says what failed instead of stopping the rest
            rows.append({"engine": f"Ray {actors} actor(s): failed ({type(exc).__name__}: {exc})"[:160]})
            continue
        sec = time.perf_counter() - t0
        rows.append({"engine": f"Ray {actors} actor{'s' if actors > 1 else ''} (local Ray, incl. start-up)",
                     "studies": len(files), "seconds": sec, "studies/s": len(files) / sec,
                     "overhead ms/study vs local": 1000 * (sec - local) / len(files)})
        print(f"  Ray {actors} actor(s): {sec:.1f} s", flush=True)
    return rows


def rss_rows(run: Path, images: np.ndarray, sizes: list[int], work: Path, runtimes: list[str]) -> list[dict]:
    """Peak RSS of `meddx predict RUN FOLDER` (fresh process, own rusage) for each number of studies."""
    rows = []
    for n in sizes:
        folder = write_pngs(images[:n], work / f"rss{n}")
        for rt in runtimes:
            # The child reports its own VmHWM: a child's rusage ru_maxrss would include this (big) process's RSS
            # at fork time, which Linux carries across exec.
            peak_file = work / f"peak{n}{rt}.txt"
            cmd = [sys.executable, "-c", PEAK_CHILD, str(peak_file), "predict", str(run), str(folder),
                   "--out", str(work / f"p{n}{rt}"), "--runtime", rt]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            sec = time.perf_counter() - t0
            ok = proc.returncode == 0 and peak_file.is_file()
            peak = int(peak_file.read_text()) / 1024 if ok else None
            rows.append({"studies": n, "runtime": rt, "peak RSS MiB": peak, "seconds (incl. start-up)": sec,
                         "studies/s": n / sec, "ok": ok or proc.stderr.strip()[-120:]})
            print(f"  {n} studies, {rt}: {peak} MiB, {sec:.1f} s", flush=True)
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000, help="studies predicted by each runtime (default 10000; 0 skips)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--run", type=Path, default=DEMO_RUN, help="a classifier RUN (default the demo fixture)")
    p.add_argument("--rss-sizes", default="1000,10000", help="numbers of studies for the peak-RSS rows ('' skips)")
    p.add_argument("--rss-runtimes", default="keras", help="runtimes for the peak-RSS rows (keras,onnx,openvino)")
    p.add_argument("--ray-n", type=int, default=1000, help="PNG studies for the Ray rows (0 skips them)")
    args = p.parse_args()
    if args.quick:
        args.n, args.rss_sizes, args.ray_n = 512, "100,1000", 64
    if args.run == DEMO_RUN:  # its ood.npz is fitted on first use, not kept in git
        sys.path.insert(0, str(REPO_ROOT))
        from tests.fixture_runs import ensure_demo_ood

        ensure_demo_ood()
    info = machine_info()
    print_header("scale: exported runtimes, Ray and memory", info)
    sizes = [int(s) for s in args.rss_sizes.split(",") if s.strip()]
    from meddx.models.runtime import configure_tensorflow

    configure_tensorflow(inter_op=1)  # the inference setting (benchmarks/threads.py)
    from meddx.infer import load

    with tempfile.TemporaryDirectory(prefix="meddx-scale-") as tmp:
        work = Path(tmp)
        run = work / "run"
        shutil.copytree(args.run, run, ignore=shutil.ignore_patterns("export"))
        t0 = time.perf_counter()
        images = make_studies(max([args.n, args.ray_n, *sizes]))
        print(f"generated {len(images)} studies in {time.perf_counter() - t0:.1f} s", flush=True)
        prep = load(run, heatmaps=False).preprocessing
        tables: dict[str, str] = {}
        payload: dict[str, Any] = {"n": args.n, "batch": args.batch}
        if args.n:
            x = prep.batch(images[: args.n], progress=False)
            rows, notes = runtime_rows(run, x, args.batch)
            tables["runtimes"] = table(rows)
            print(f"\n{args.n} studies, 64x64, batch {args.batch} (model time on preprocessed arrays):")
            print(tables["runtimes"])
            for fmt, note in notes.items():
                print(f"  export {fmt}: {note}")
            payload.update(runtimes=rows, export_parity=notes)
        else:  # the exports the peak-RSS rows use
            from meddx.app.export import export_run

            for rt in {r for r in args.rss_runtimes.split(",") if r != "keras"}:
                export_run(run, rt, log=lambda s: None)
        if args.ray_n:
            folder = write_pngs(images[: args.ray_n], work / "ray_pngs")
            payload["ray"] = ray_rows(run, folder, work)
            tables["ray"] = table(payload["ray"])
            print(f"\n{args.ray_n} PNG studies end to end (read + preprocess + predict):")
            print(tables["ray"])
        if sizes:
            payload["rss"] = rss_rows(run, images, sizes, work, args.rss_runtimes.split(","))
            tables["rss"] = table(payload["rss"])
            print("\npeak RSS of `meddx predict RUN FOLDER` (fresh process per size):")
            print(tables["rss"])
    out = write_results(args, "scale" if args.n else "scale_rss", info, payload, tables)
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
