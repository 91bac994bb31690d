"""Numbers `meddx evaluate/predict/report` produced before the inference-layer redesign, and the code that
re-measures them.

`python tests/regression/reference.py --train` trained the tiny RUN fixtures in `tests/fixtures/runs/` (with the
code before the redesign, commit 4b2c490) and `--record` wrote `reference.json` from them; the test
`test_reference.py` re-measures with today's code and compares.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RUNS = HERE.parent / "fixtures" / "runs"
SHARED = HERE.parents[2] / "shared" / "data"
REFERENCE = HERE / "reference.json"
BREAST = SHARED / "medmnist" / "breastmnist_trainval.npz"

SHARED_INPUTS = {  # input kind -> path under ../shared/data
    "dicom_series": "dicom/ct_abdomen_ircadb",
    "nifti_volume": "nifti/nifti/brain2_image.nii.gz",
    "video": "pocus/convex/Pneu_from_article_rippey.mp4",
}


def _cli(*args: str) -> None:
    from meddx.cli import main

    rc = main([str(a) for a in args])
    if rc != 0:
        raise RuntimeError(f"meddx {' '.join(map(str, args))} exited with {rc}")


def make_data(root: Path) -> dict[str, Path]:
    """Synthetic demo slices (seeded, so identical on every machine) and BreastMNIST val PNGs."""
    from meddx.data.synthetic import write_synthetic_folder

    out = {"demo": write_synthetic_folder(root / "demo", n=240, size=64, seed=0)}
    if BREAST.is_file():
        from PIL import Image as PILImage

        with np.load(BREAST, allow_pickle=False) as z:
            imgs = z["val_images"][:6]
        folder = root / "breast_png"
        folder.mkdir(parents=True, exist_ok=True)
        for i, a in enumerate(imgs):
            PILImage.fromarray(a).save(folder / f"val{i}.png")
        out["breast_png"] = folder
    return out


def _predictions(path: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader(path.open()))
    keep = []
    for r in rows:
        row = {k: v for k, v in r.items() if k.startswith("p_") or k in
               ("predicted", "probability", "n_slices", "key_slices", "n_voxels", "volume_ml", "n_lesions")}
        if r.get("mask"):
            row["mask_sum"] = int(np.load(r["mask"]).astype(bool).sum())
        if r.get("overlay") and Path(r["overlay"].replace("_overlay.png", "_heatmap.npy")).is_file():
            row["heatmap_sum"] = round(float(np.load(r["overlay"].replace("_overlay.png", "_heatmap.npy")).sum()), 3)
        keep.append(row)
    return keep


def _metrics(path: Path) -> dict[str, Any]:
    m = json.loads(path.read_text())
    keys = ("auc", "accuracy", "accuracy_argmax", "ece", "brier", "n", "auc_ci", "dice", "iou", "hd95",
            "patient_dice", "lesion_dice", "localisation")
    return {k: m[k] for k in keys if k in m}


def _report_numbers(html: Path) -> list[str]:
    """Probabilities and sizes stated in a report (the decimals in its text, minus dates and versions)."""
    text = re.sub(r"<[^>]+>", " ", html.read_text())
    text = re.sub(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2})?", " ", text)
    return re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", text)


def measure(runs: Path, data: dict[str, Path], work: Path) -> dict[str, Any]:
    """Run evaluate / predict / report through the CLI on every fixture RUN; collect the numbers."""
    res: dict[str, Any] = {}
    demo_manifest = data["demo"]
    demo_files = sorted(str(p) for p in (demo_manifest.parent / "lesion").glob("*.png")
                        if not p.name.endswith("_mask.png"))[:4]
    demo_files += sorted(str(p) for p in (demo_manifest.parent / "normal").glob("*.png")
                         if not p.name.endswith("_mask.png"))[:2]
    shared = {k: SHARED / v for k, v in SHARED_INPUTS.items() if (SHARED / v).exists()}
    for name in ("demo_cls", "demo_seg"):
        run = runs / name
        out = work / name
        _cli("evaluate", run, demo_manifest, "--split", "test", "--out", out / "eval")
        res[f"{name}/evaluate"] = _metrics(out / "eval" / "metrics.json")
        # --allow-ood: the reference is the model's numbers; inputs outside a RUN's training distribution (the CT,
        # NIfTI and video for the 64 px demo models) otherwise get no diagnosis (issue 19, tests/infer/test_ood.py)
        _cli("predict", run, *demo_files, "--out", out / "pred", "--heatmaps", "--allow-ood")
        res[f"{name}/predict"] = _predictions(out / "pred" / "predictions.csv")
        _cli("report", run, demo_files[0], "--out", out / "report", "--no-dicom", "--allow-ood")
        res[f"{name}/report"] = _report_numbers(out / "report" / "report.html")
        for kind, path in shared.items():
            if name == "demo_seg" and kind == "video":
                continue
            _cli("predict", run, path, "--out", out / f"pred_{kind}", "--allow-ood")
            res[f"{name}/predict_{kind}"] = _predictions(out / f"pred_{kind}" / "predictions.csv")
    if "breast_png" in data:
        run = runs / "breast_cls"
        out = work / "breast_cls"
        _cli("evaluate", run, BREAST, "--split", "val", "--out", out / "eval")
        res["breast_cls/evaluate"] = _metrics(out / "eval" / "metrics.json")
        files = sorted(str(p) for p in data["breast_png"].glob("*.png"))
        _cli("predict", run, *files, "--out", out / "pred", "--heatmaps")
        res["breast_cls/predict"] = _predictions(out / "pred" / "predictions.csv")
        _cli("report", run, files[0], "--out", out / "report", "--no-dicom")
        res["breast_cls/report"] = _report_numbers(out / "report" / "report.html")
    return res


def train_fixtures(work: Path) -> None:
    """Train the three tiny RUNs (seconds each) and keep only what loading needs."""
    data = make_data(work / "data")
    small = work / "small.json"
    small.write_text(json.dumps({"model_options": {"filters": [8, 16], "pools": 1, "pooling": "max",
                                                   "strided_stem": False}}))
    small_unet = work / "small_unet.json"
    small_unet.write_text(json.dumps({"model_options": {"depth": 3, "base_filters": 8}}))
    jobs = {"demo_cls": [data["demo"], "--epochs", "12", "--config", small],
            "demo_seg": [data["demo"], "--task", "segmentation", "--epochs", "12", "--model", "unet",
                         "--stack-min-fraction", "0.25", "--config", small_unet],
            "breast_cls": [BREAST, "--epochs", "12", "--config", small]}
    for name, args in jobs.items():
        if name == "demo_seg":  # (before the redesign a segmenter ignored the config's model_options)
            from meddx.train.config import TrainConfig
            from meddx.train.segmentation import train_segmenter

            cfg = TrainConfig(task="segmentation", model="unet", epochs=12, stack_min_fraction=0.25, seed=0)
            train_segmenter(data["demo"], work / name, cfg, overwrite=True, base_filters=8, depth=3)
        else:
            _cli("train", *args, "--out", work / name, "--seed", "0", "--overwrite")
        dst = RUNS / name
        shutil.rmtree(dst, ignore_errors=True)
        dst.mkdir(parents=True)
        for f in ("model.keras", "run.json"):
            shutil.copy(work / name / f, dst / f)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", action="store_true")
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--work", default="/tmp/meddx-regression")
    a = ap.parse_args()
    work = Path(a.work)
    if a.train:
        train_fixtures(work / "train")
    if a.record:
        sys.path.insert(0, str(HERE.parents[1]))
        from tests.fixture_runs import ensure_demo_ood

        ensure_demo_ood()  # demo_cls's ood.npz is fitted on first use, not kept in git
        res = measure(RUNS, make_data(work / "data"), work / "measure")
        REFERENCE.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {REFERENCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
