"""`meddx predict` speed and memory: 624 PNGs through the CLI, a cold one-image prediction, where the time goes,
and peak RSS as the number of studies grows 10x. Printed beside the issue's PyTorch reference (issue 22).

Inputs: 624 PneumoniaMNIST 28x28 PNGs (the val split's 524 + the first 100 train images of
../shared/data/medmnist/pneumoniamnist_trainval.npz) written to a temp folder. RUN: tests/fixtures/runs/breast_cls
(the registry `cnn` at 28 px, the same network a quick pneumonia RUN has) unless --run is given, or --train trains
a pneumonia RUN for 2 epochs first.

Each measurement runs in a fresh process (best of --repeat):
- interpreter start; `import tensorflow`; import + load the RUN (`meddx.infer.load`, no heatmaps);
- the in-process breakdown: TF import, RUN load (Keras deserialisation), first call (tracing), reading 624 PNGs,
  predicting them in one process (`Classifier.predict_batch`), writing the CSV;
- `meddx predict RUN *.png` on 624 PNGs and on 1 PNG (wall time of the whole command), with Keras and with the RUN
  exported to ONNX (`--runtime onnx`: TensorFlow is not imported at all), and their largest probability difference;
- peak RSS of `meddx predict RUN --manifest` at N and 10N studies (the manifest lists the 624 files repeatedly).

Run:  python benchmarks/predict_speed.py [--quick] [--run RUN] [--train] [--repeat 3]
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, SHARED_DATA, machine_info, parser, print_header, table, write_results  # noqa: E402

# The issue's measurements on this machine (PneumoniaMNIST test, 624 PNGs, trained models).
PYTORCH_624_S = (4.0, 5.0)  # plain PyTorch script, ResNet-18
MONAI_624_S = (6.0, 7.0)  # MONAI DenseNet121
PYTORCH_COLD_ONE_S = (1.7, 2.1)
ISSUE_MEDDX_624_S = (43.0, 45.0)
ISSUE_MEDDX_COLD_ONE_S = 5.5
TARGET_624_S = 1.5 * PYTORCH_624_S[1]  # <= 1.5x PyTorch: ~7 s
TARGET_COLD_ONE_S = 3.0

BREAKDOWN = r"""
import os, sys, time, json, glob
t0 = time.perf_counter()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow
t1 = time.perf_counter()
from meddx.infer import load
from meddx.io import read_image
from meddx.app.common import write_csv
t2 = time.perf_counter()
p = load(sys.argv[1], heatmaps=False)
t3 = time.perf_counter()
files = sorted(glob.glob(os.path.join(sys.argv[2], "*.png")))
first = p.predict(read_image(files[0]), heatmap=False)
t4 = time.perf_counter()
images = [read_image(f) for f in files]
t5 = time.perf_counter()
preds = p.predict_batch(images, heatmap=False)
t6 = time.perf_counter()
write_csv(os.path.join(sys.argv[3], "p.csv"), [{"input": f, "p": q.probability} for f, q in zip(files, preds)])
t7 = time.perf_counter()
print(json.dumps({"import_tensorflow": t1 - t0, "import_meddx": t2 - t1, "load_run": t3 - t2,
                  "first_call_tracing": t4 - t3, "read_all": t5 - t4, "predict_all_in_process": t6 - t5,
                  "write_csv": t7 - t6}))
"""


def write_pngs(folder: Path, n: int) -> list[Path]:
    """The first `n` of PneumoniaMNIST val + train as 28x28 PNGs."""
    import numpy as np
    from PIL import Image

    d = np.load(SHARED_DATA / "medmnist" / "pneumoniamnist_trainval.npz")
    images = np.concatenate([d["val_images"], d["train_images"]])[:n]
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, a in enumerate(images):
        files.append(folder / f"img_{i:04d}.png")
        Image.fromarray(a).save(files[-1])
    return files


def run_cmd(cmd: list[str], cwd: Path | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB of the child, stdout) of a command in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-f", "MAXRSS_KB %M", *cmd], capture_output=True, text=True, cwd=cwd,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed: {r.stderr[-2000:]}")
    rss = [int(line.split()[1]) for line in r.stderr.splitlines() if line.startswith("MAXRSS_KB")]
    peak = rss[-1] / 1024 if rss else max(0, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss - before) / 1024
    return wall, peak, r.stdout


def best(cmd: list[str], repeat: int) -> dict[str, float]:
    runs = [run_cmd(cmd) for _ in range(repeat)]
    return {"best_s": min(w for w, _, _ in runs), "worst_s": max(w for w, _, _ in runs),
            "peak_rss_mib": max(m for _, m, _ in runs)}


def compare(a: Path, b: Path) -> tuple[float, bool]:
    """(max |probability difference|, identical labels) between two predictions.csv."""
    import csv

    with a.open(newline="") as fa, b.open(newline="") as fb:
        ra, rb = list(csv.DictReader(fa)), list(csv.DictReader(fb))
    diffs = [abs(float(x[k]) - float(y[k])) for x, y in zip(ra, rb) for k in x
             if (k == "probability" or k.startswith("p_")) and x[k] != "" and y.get(k, "") != ""]
    return max(diffs, default=0.0), [x["predicted"] for x in ra] == [y["predicted"] for y in rb]


def train_run(work: Path) -> Path:
    """A quick pneumonia RUN (2 epochs, niced)."""
    run = work / "pneumonia_run"
    subprocess.run(["nice", "-n", "10", "meddx", "train", str(SHARED_DATA / "medmnist" / "pneumoniamnist_trainval.npz"),
                    "--out", str(run), "--epochs", "2"], check=True, capture_output=True)
    return run


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=REPO_ROOT / "tests" / "fixtures" / "runs" / "breast_cls")
    ap.add_argument("--train", action="store_true", help="train a pneumonia RUN (2 epochs) and use it")
    ap.add_argument("--repeat", type=int, default=3, help="fresh-process repeats per measurement (best is kept)")
    args = ap.parse_args()
    info = machine_info()
    print_header("meddx predict: speed and memory", info)
    n = 48 if args.quick else 624
    repeat = 1 if args.quick else args.repeat
    with tempfile.TemporaryDirectory(prefix="meddx-predict-speed-") as tmp:
        work = Path(tmp)
        run = train_run(work) if args.train else args.run
        files = write_pngs(work / "png", n)
        print(f"RUN {run}; {len(files)} PNGs in {work / 'png'}; best of {repeat} fresh processes each")

        stages = {
            "python start": best([sys.executable, "-c", "pass"], repeat),
            "import tensorflow": best([sys.executable, "-c", "import tensorflow"], repeat),
            "import + load RUN": best([sys.executable, "-c", f"from meddx.infer import load; load({str(run)!r})"],
                                      repeat),
        }
        breakdowns = []
        for _ in range(repeat):
            _, _, out = run_cmd([sys.executable, "-c", BREAKDOWN, str(run), str(work / "png"), str(work)])
            breakdowns.append(json.loads(out.strip().splitlines()[-1]))
        breakdown = {k: min(b[k] for b in breakdowns) for k in breakdowns[0]}

        cli_n = best(["meddx", "predict", str(run), *map(str, files), "--out", str(work / "out_n")], repeat)
        # fresh --out each time: a re-run replaces its own outputs, which is part of what a user pays anyway
        cli_one = best(["meddx", "predict", str(run), str(files[0]), "--out", str(work / "out_1")], repeat)

        onnx = {}
        try:  # the same RUN exported to ONNX (a copy, so the RUN folder is not written to): no TensorFlow at all
            import shutil

            shutil.copytree(run, work / "run_onnx")
            subprocess.run(["meddx", "export", str(work / "run_onnx"), "--format", "onnx"], check=True,
                           capture_output=True)
            onnx["n"] = best(["meddx", "predict", str(work / "run_onnx"), *map(str, files), "--runtime", "onnx",
                              "--out", str(work / "onnx_n")], repeat)
            onnx["one"] = best(["meddx", "predict", str(work / "run_onnx"), str(files[0]), "--runtime", "onnx",
                                "--out", str(work / "onnx_1")], repeat)
            onnx["max_abs_diff"], onnx["same_labels"] = compare(work / "out_n" / "predictions.csv",
                                                                work / "onnx_n" / "predictions.csv")
        except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
            print(f"ONNX rows skipped: {exc}")

        rss = []
        for mult in (1, 10):
            manifest = work / f"studies_{mult}.csv"
            manifest.write_text("path,study_id\n" + "".join(f"png/{f.name},s{k}_{f.stem}\n"
                                                             for k in range(mult) for f in files))
            wall, peak, _ = run_cmd(["meddx", "predict", str(run), "--manifest", str(manifest),
                                     "--out", str(work / f"out_rss_{mult}")])
            rss.append({"studies": mult * len(files), "wall_s": wall, "peak_rss_mib": peak,
                        "studies_per_s": mult * len(files) / wall})

    rows = [
        {"measure": f"CLI, {n} PNGs", "meddx_s": cli_n["best_s"], "meddx_worst_s": cli_n["worst_s"],
         "issue_meddx_s": f"{ISSUE_MEDDX_624_S[0]:.0f}-{ISSUE_MEDDX_624_S[1]:.0f}",
         "pytorch_s": f"{PYTORCH_624_S[0]:.0f}-{PYTORCH_624_S[1]:.0f} (MONAI {MONAI_624_S[0]:.0f}-"
                      f"{MONAI_624_S[1]:.0f})",
         "target_s": TARGET_624_S, "meets": cli_n["best_s"] <= TARGET_624_S},
        {"measure": "CLI, cold 1 PNG", "meddx_s": cli_one["best_s"], "meddx_worst_s": cli_one["worst_s"],
         "issue_meddx_s": f"{ISSUE_MEDDX_COLD_ONE_S}", "pytorch_s": f"{PYTORCH_COLD_ONE_S[0]}-{PYTORCH_COLD_ONE_S[1]}",
         "target_s": TARGET_COLD_ONE_S, "meets": cli_one["best_s"] <= TARGET_COLD_ONE_S},
    ]
    if onnx.get("n"):
        rows += [
            {"measure": f"CLI --runtime onnx, {n} PNGs", "meddx_s": onnx["n"]["best_s"],
             "meddx_worst_s": onnx["n"]["worst_s"], "pytorch_s": rows[0]["pytorch_s"], "target_s": TARGET_624_S,
             "meets": onnx["n"]["best_s"] <= TARGET_624_S},
            {"measure": "CLI --runtime onnx, cold 1 PNG", "meddx_s": onnx["one"]["best_s"],
             "meddx_worst_s": onnx["one"]["worst_s"], "pytorch_s": rows[1]["pytorch_s"],
             "target_s": TARGET_COLD_ONE_S, "meets": onnx["one"]["best_s"] <= TARGET_COLD_ONE_S}]
        print(f"onnx vs keras on the {n} PNGs: max |p diff| {onnx['max_abs_diff']:.2g}, "
              f"same labels: {onnx['same_labels']}")
    stage_rows = [{"stage": k, "best_s": v["best_s"], "peak_rss_mib": v["peak_rss_mib"]} for k, v in stages.items()]
    stage_rows += [{"stage": f"in-process: {k}", "best_s": v} for k, v in breakdown.items()]
    tables = {"side_by_side": table(rows), "where_the_time_goes": table(stage_rows, ["stage", "best_s",
                                                                                       "peak_rss_mib"]),
              "memory": table(rss)}
    print("\nmeddx vs the issue's PyTorch reference (PyTorch figures measured in the issue, not re-run here):")
    print(tables["side_by_side"])
    print("\nwhere the time goes (fresh processes):")
    print(tables["where_the_time_goes"])
    print("\npeak RSS of `meddx predict --manifest` (streamed: flat when studies grow 10x):")
    print(tables["memory"])
    if info["shared_machine"]:
        print("note: the machine was shared (load > 1.5); timings are noisy and pessimistic")
    write_results(args, "predict_speed", info, {"run": str(args.run), "n": n, "side_by_side": rows,
                                                "stages": stages, "breakdown": breakdown, "memory": rss,
                                                "onnx": onnx}, tables)


if __name__ == "__main__":
    main()
