"""Weakly supervised localisation: pointing game of Grad-CAM, Grad-CAM++ and occlusion.

Two datasets, each with exact lesion masks that the classifiers never see:
1. the demo's synthetic lesion slices (`meddx.app.run_demo` with `FINE_CAM_MODEL`: the demo cnn
   without its strided stem, a 32x32 Grad-CAM grid; 40 epochs), scored on the held-out test split's
   lesion slices;
2. LGG brain MRI (../shared/data/lgg) as lesion-present vs lesion-absent slices, 5-fold by
   patient (every patient is held out once, so all lesion slices are scored out of fold), the
   default `cnn` with a global-max head on the z-scored FLAIR channel (the masks' sequence).

Pointing game: is the heatmap's hottest pixel inside the lesion mask (exact, no tolerance)?
Also reported: the same within 2 px, and the heatmap-vs-mask IoU at the best threshold.
References side by side: a heatmap that is the image itself (brightest pixel; FLAIR for LGG)
and the centre pixel, the two trivial "where would you guess" baselines.

Run:  python benchmarks/localisation.py [--quick] [--skip-lgg] [--skip-synthetic] [--seeds 0,1]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, machine_info, parser, print_header, table, write_results  # noqa: E402

METHODS = ("gradcam", "gradcam++", "occlusion")


def _centre_heatmaps(shape: tuple[int, ...]) -> np.ndarray:
    """A heatmap peaking at the image centre (the 'guess the middle' reference)."""
    n, h, w = shape
    yy, xx = np.mgrid[:h, :w]
    d = -((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2)
    return np.repeat(((d - d.min()) / (np.ptp(d) or 1))[None], n, axis=0).astype(np.float32)


def score_methods(model: Any, x: np.ndarray, masks: np.ndarray, image_channel: int) -> dict[str, dict[str, Any]]:
    """Pointing game (exact and 2 px), best-threshold IoU and seconds for each method and reference."""
    from meddx.evaluate.localisation import localisation_metrics
    from meddx.explain import explain

    out: dict[str, dict[str, Any]] = {}
    heat_by: dict[str, np.ndarray] = {}
    for method in METHODS:
        t0 = time.perf_counter()
        heat_by[method] = explain(model, x, method=method, class_index=1)
        out[method] = {"seconds": time.perf_counter() - t0}
    heat_by["image intensity (ref)"] = x[..., image_channel].astype(np.float32)
    heat_by["centre (ref)"] = _centre_heatmaps(masks.shape)
    for name, heat in heat_by.items():
        exact = localisation_metrics(heat, masks)
        near = localisation_metrics(heat, masks, tolerance=2.0)
        out.setdefault(name, {}).update(pointing=exact["pointing_hit_rate"], pointing_2px=near["pointing_hit_rate"],
                                        best_iou=exact["mean_best_iou"], n=exact["n_evaluated"])
    return out


def synthetic(work: Path, epochs: int, n: int, seed: int = 0) -> dict[str, Any]:
    """The demo pipeline with FINE_CAM_MODEL on its synthetic slices (data and training drawn from `seed`);
    localisation on the test lesion slices."""
    import json

    from meddx.data.datasets import load_manifest
    from meddx.transforms.prepare import load_masks, materialise
    from meddx.data.splits import assign_splits
    from meddx.data.synthetic import CLASS_NAMES
    from meddx.app import FINE_CAM_MODEL, run_demo
    from meddx.infer import load as load_run

    t0 = time.monotonic()
    summary = run_demo(work / "demo", n=n, epochs=epochs, minutes=120, seed=seed, log=lambda s: None,
                       model_options=FINE_CAM_MODEL)
    train_min = (time.monotonic() - t0) / 60
    run = load_run(summary["run"])
    ds = load_manifest(work / "demo" / "data" / "manifest.csv", class_names=CLASS_NAMES)
    cfg = run.info.config
    test = ds.subset(np.flatnonzero(assign_splits(ds, cfg["val_fraction"], cfg["test_fraction"], cfg["seed"]) == "test"))
    x = materialise(test, run.preprocessing)
    masks = load_masks(test, x.shape[1:3])
    pos = np.flatnonzero((test.labels == 1) & masks.reshape(len(masks), -1).any(axis=1))
    metrics = json.loads(Path(summary["metrics"]).read_text())
    return {"auc": metrics["auc"], "minutes": train_min, "epochs": epochs, "seed": seed,
            "methods": score_methods(run.model, x[pos], masks[pos] > 0, image_channel=0)}


def lgg_dataset() -> Any:
    """LGG slices labelled normal (0) / lesion (1), patient ids = the patient folders."""
    from meddx.data.lgg import LESION, paired_folder_dataset

    ds = paired_folder_dataset(SHARED_DATA / "lgg")
    has_lesion = np.asarray([ds.class_names[int(v)] == LESION for v in ds.labels], dtype=int)
    ds.labels, ds.class_names = has_lesion, ["normal", "lesion"]
    return ds


def lgg(work: Path, folds: int, image_size: int, epochs: int | None) -> dict[str, Any]:
    """5-fold-by-patient lesion-vs-normal classifier; localisation on each fold's held-out lesion slices."""
    from sklearn.metrics import roc_auc_score

    from meddx.transforms.prepare import load_masks, materialise
    from meddx.data.splits import _groups, _holdout, _strata, kfold_splits
    from meddx.infer import load as load_run
    from meddx.train.config import TrainConfig
    from meddx.train.fit import train

    ds = lgg_dataset()
    per_fold, probs, labels = [], [], []
    heat_inputs: list[tuple[Any, np.ndarray, np.ndarray]] = []
    t0 = time.monotonic()
    for k, (tr, te) in enumerate(kfold_splits(ds, k=folds, seed=0)):
        splits = np.full(len(ds), "test", dtype="<U8")
        splits[tr] = "train"
        splits[_holdout(_strata(ds), _groups(ds), tr, 0.2, k)] = "val"  # whole training patients
        ds.splits = splits
        cfg = TrainConfig(image_size=image_size, intensity="zscore:nonzero", select_channels=[1], epochs=epochs,
                          seed=k, model_options={"pooling": "max"})
        train(ds, work / f"lgg_fold{k}", cfg, overwrite=True, log=lambda s: None, verbose=0)
        run = load_run(work / f"lgg_fold{k}")
        test = ds.subset(te)
        x = materialise(test, run.preprocessing)
        p = run.predict_proba(x)[:, 1]
        probs.append(p)
        labels.append(test.labels)
        masks = load_masks(test, x.shape[1:3]) > 0
        pos = np.flatnonzero(masks.reshape(len(masks), -1).any(axis=1))
        heat_inputs.append((run.model, x[pos], masks[pos]))
        per_fold.append({"fold": k, "test_patients": sorted(set(test.patient_ids)), "n": len(te),
                         "n_lesion": len(pos)})
    ds.splits = np.full(len(ds), "", dtype="<U8")
    train_min = (time.monotonic() - t0) / 60
    merged: dict[str, dict[str, Any]] = {}
    for model, x, m in heat_inputs:  # pool the folds' lesion slices: weights by n
        for name, r in score_methods(model, x, m, image_channel=0).items():
            acc = merged.setdefault(name, {"n": 0, "hits": 0.0, "hits2": 0.0, "iou": 0.0, "seconds": 0.0})
            acc["n"] += r["n"]
            acc["hits"] += r["pointing"] * r["n"]
            acc["hits2"] += r["pointing_2px"] * r["n"]
            acc["iou"] += r["best_iou"] * r["n"]
            acc["seconds"] += r.get("seconds", 0.0)
    methods = {name: {"pointing": a["hits"] / a["n"], "pointing_2px": a["hits2"] / a["n"],
                      "best_iou": a["iou"] / a["n"], "n": a["n"], "seconds": a["seconds"] or None}
               for name, a in merged.items()}
    y, s = np.concatenate(labels), np.concatenate(probs)
    return {"auc": float(roc_auc_score(y, s)), "minutes": train_min, "folds": per_fold, "image_size": image_size,
            "methods": methods}


def _rows(dataset: str, res: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"dataset": dataset, "method": name, "pointing game": r["pointing"], "within 2 px": r["pointing_2px"],
             "best IoU": r["best_iou"], "n lesions": r["n"], "heatmap s": r.get("seconds")}
            for name, r in res["methods"].items()]


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--skip-lgg", action="store_true")
    p.add_argument("--skip-synthetic", action="store_true")
    p.add_argument("--seeds", default="0,1", help="comma-separated demo seeds (data and training); the demo's "
                   "localisation varies with the seed and the CPU, so one seed says little")
    args = p.parse_args(argv)
    info = machine_info()
    print_header("localisation (pointing game)", info)
    payload: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="meddx-loc-") as tmp:
        work = Path(tmp)
        if not args.skip_synthetic:
            for seed in [int(v) for v in args.seeds.split(",") if v.strip()]:
                res = synthetic(work / f"seed{seed}", epochs=2 if args.quick else 40, n=300 if args.quick else 1200,
                                seed=seed)
                payload[f"synthetic_seed{seed}"] = res
                rows += _rows(f"synthetic demo, seed {seed}", res)
                print(f"synthetic seed {seed}: test AUC {res['auc']:.3f}, {res['epochs']} epochs in "
                      f"{res['minutes']:.1f} min")
        if args.skip_lgg:
            pass
        elif not (SHARED_DATA / "lgg").is_dir():
            print(f"skip LGG: {SHARED_DATA / 'lgg'} is absent")
        else:
            res = lgg(work, folds=5, image_size=64 if args.quick else 128, epochs=2 if args.quick else None)
            payload["lgg"] = res
            rows += _rows("LGG (5-fold by patient)", res)
            print(f"LGG lesion-vs-normal: out-of-fold AUC {res['auc']:.3f}, 5 folds in {res['minutes']:.1f} min")
    tab = table(rows)
    print(tab)
    write_results(args, "localisation", info, payload, {"pointing_game": tab})
    return 0


if __name__ == "__main__":
    sys.exit(main())
