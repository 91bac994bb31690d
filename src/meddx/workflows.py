"""One function per CLI command: evaluate a RUN, predict studies, write reports, run the demo.

`cli.py` parses arguments and calls these; all the logic lives here or below.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from meddx.errors import DataError, InputError, naming
from meddx.utils import atomic_write_json, atomic_write_text

Log = Callable[[str], None]


# -- evaluate --------------------------------------------------------------------------

def _dataset_for_run(run: Any, data: str | Path) -> Any:
    """Load DATA with the RUN's class names, refusing labels the model does not know."""
    from meddx.data.datasets import load_dataset, load_manifest

    p = Path(data)
    if p.suffix.lower() in (".csv", ".tsv") or (p.is_dir() and (p / "manifest.csv").is_file()):
        return load_manifest(p if p.suffix else p / "manifest.csv", class_names=run.class_names)
    ds = load_dataset(p)
    if ds.kind == "folder" and ds.class_names != run.class_names:
        unknown = sorted(set(ds.class_names) - set(run.class_names))
        if unknown:
            raise DataError(f"unknown class folder(s) {', '.join(unknown)}; the model knows "
                            f"{', '.join(run.class_names)}", p)
        remap = np.asarray([run.class_names.index(n) for n in ds.class_names])
        ds.labels = remap[ds.labels]
        ds.class_names = run.class_names
    if ds.kind == "npz" and ds.task != "multilabel" and len(ds.class_names) > len(run.class_names):
        raise DataError(f"labels go up to {len(ds.class_names) - 1} but the model has "
                        f"{len(run.class_names)} classes", p)
    if ds.kind == "npz":
        ds.class_names = run.class_names
        ds.task = run.task
    return ds


def _load_run(run_dir: str | Path, tta: bool = False) -> Any:
    """The RUN in `run_dir`, with flip test-time augmentation switched on when `tta` (segmentation runs)."""
    from meddx.runs import load_run

    run = load_run(run_dir)
    if tta:
        from meddx.train.segmentation import enable_tta
        enable_tta(run)
    return run


def evaluate_run(run_dir: str | Path, data: str | Path, out: str | Path, split: str = "test",
                 report: bool = False, tta: bool = False, log: Log = print,
                 stack_min_fraction: float | None = None) -> dict[str, Any]:
    """Metrics, curves and calibration of a RUN on one split of DATA, written to `out` (`tta`: flip
    test-time augmentation, segmentation runs; `stack_min_fraction`: replaces a 2D segmenter's stored
    stack post-processing)."""
    from meddx.data.prepare import load_masks, materialise
    from meddx.data.splits import assign_splits
    from meddx.evaluate.plots import write_classification_outputs

    run = _load_run(run_dir, tta)
    if stack_min_fraction is not None:
        from meddx.train.segmentation import set_stack_min_fraction
        set_stack_min_fraction(run, stack_min_fraction)
    if run.info.get("kind") == "segmenter":
        from meddx.train.segmentation import evaluate_segmenter
        return evaluate_segmenter(run, data, out, split=split, log=log)
    ds = _dataset_for_run(run, data)
    cfg = run.info.get("config", {})
    splits = assign_splits(ds, cfg.get("val_fraction", 0.15), cfg.get("test_fraction", 0.15), cfg.get("seed", 0))
    available = sorted(set(splits) - {""})
    if split == "all":
        idx = np.arange(len(ds))
    else:
        idx = np.flatnonzero(splits == split)
    if len(idx) == 0:
        raise DataError(f"no '{split}' split in this data (available: {', '.join(available) or 'none'})", data)
    if split in ("train", "val") and Path(str(run.info["data"]["source"])).resolve() == Path(str(ds.source)).resolve():
        log(f"warning: the '{split}' split was used for {'training' if split == 'train' else 'model selection'}; "
            f"its metrics are optimistic")
    sub = ds.subset(idx)
    x = materialise(sub, run.preprocessing)
    probs = run.predict_proba(x)
    groups = sub.patient_ids
    y = sub.labels
    metrics = write_classification_outputs(y, probs, run.class_names, run.task, out,
                                           threshold=run.threshold if run.threshold is not None else 0.5,
                                           groups=groups, seed=cfg.get("seed", 0))
    metrics["split"] = split
    metrics["data"] = str(ds.source)
    masks = load_masks(sub, tuple(run.preprocessing.output_shape[:-1]))
    if masks is not None and run.task == "binary":
        metrics["localisation"] = _heatmap_localisation(run, x, y, masks, probs, out)
    atomic_write_json(Path(out) / "metrics.json", metrics)
    if report:
        from meddx.report import render_evaluation_report

        metrics["report"] = str(render_evaluation_report(out, run.path))
    _log_metrics(metrics, out, log)
    return metrics


def _heatmap_localisation(run: Any, x: np.ndarray, y: np.ndarray, masks: np.ndarray, probs: np.ndarray,
                          out: str | Path) -> dict[str, Any]:
    """Grad-CAM pointing game and best-threshold IoU on positive cases that have a lesion mask."""
    from meddx.evaluate.localisation import localisation_metrics
    from meddx.explain import grad_cam

    pos = np.flatnonzero((y == 1) & (masks.reshape(len(masks), -1).any(axis=1)))
    if len(pos) == 0:
        return {"n": 0}
    heat = grad_cam(run.model, x[pos], class_index=1)
    loc = localisation_metrics(heat, masks[pos])
    loc.pop("per_case", None)
    loc["method"] = "gradcam"
    return loc


def _log_metrics(metrics: dict[str, Any], out: str | Path, log: Log) -> None:
    ci = metrics.get("auc_ci") or [None, None]
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    log(f"{metrics.get('split', '')} split: n={metrics['n']}  AUC {fmt(metrics.get('auc'))} "
        f"(95% CI {fmt(ci[0])}-{fmt(ci[1])})  accuracy {fmt(metrics.get('accuracy'))}  "
        f"ECE {fmt(metrics.get('ece'))}  Brier {fmt(metrics.get('brier'))}")
    for c in metrics.get("per_class", []):
        log(f"  {c['name']:<20} n={c['n']:<5} sens {fmt(c.get('sensitivity'))}  spec {fmt(c.get('specificity'))}  "
            f"PPV {fmt(c.get('ppv'))}  F1 {fmt(c.get('f1'))}")
    if "localisation" in metrics and metrics["localisation"].get("n"):
        loc = metrics["localisation"]
        log(f"  Grad-CAM pointing game {fmt(loc.get('pointing_hit_rate'))} on {loc.get('n_evaluated')} lesion cases; "
            f"best-threshold IoU {fmt(loc.get('mean_best_iou'))}")
    log(f"wrote {Path(out) / 'metrics.json'} and plots in {out}")


# -- predict ---------------------------------------------------------------------------

def _display(image: Any) -> np.ndarray:
    """Grey display array in [0, 1] with the image's spatial shape (for overlays and reports)."""
    arr = np.asarray(image.array, dtype=np.float32)
    if image.is_sequence:
        arr = arr  # frames stay on the first axis
    if image.has_channels:
        arr = arr[..., :3].mean(axis=-1)
    lo, hi = np.percentile(arr, [0.5, 99.5])
    if image.modality == "CT":
        lo, hi = -160.0, 240.0  # abdomen / soft-tissue window
    return np.clip((arr - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


def _resize(arr: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    from skimage.transform import resize

    if tuple(arr.shape) == tuple(shape):
        return arr
    return resize(arr, shape, order=1, anti_aliasing=False, preserve_range=True).astype(np.float32)


def predict_study(run: Any, path: str | Path, heatmap: bool = True, method: str = "gradcam") -> dict[str, Any]:
    """Read one study, run the model (slice by slice for a 2D model on a volume) and localise."""
    from meddx.explain import explain, heatmap_to_lesions
    from meddx.io import read_image

    image = read_image(path)
    prep = run.preprocessing
    stack = image.is_sequence or (image.spatial_ndim == 3 and run.spatial_ndim == 2)
    slice_scores = key_slices = None
    pos = 1 if run.task == "binary" else None
    if stack:
        if image.is_sequence and image.spatial_ndim == 3:
            raise InputError("is a 4D series; a 2D/3D classifier needs a single volume or image", path)
        frames = [image.array[k] for k in range(image.array.shape[0])]
        x = prep.batch(frames, progress=False)
        probs_each = run.predict_proba(x)
        if run.task == "binary":
            slice_scores = probs_each[:, 1]
            p = float(slice_scores.max())
            probs = np.array([1 - p, p])
            key_slices = [int(k) for k in np.argsort(-slice_scores)[:3]]
        else:
            probs = probs_each.mean(axis=0)
            slice_scores = probs_each.max(axis=1)
            key_slices = [int(k) for k in np.argsort(-probs_each[:, probs.argmax()])[:3]]
    else:
        x = prep(image)[None]
        probs = run.predict_proba(x)[0]
    pred = int(run.decide(probs[None])[0])
    display = _display(image)
    result: dict[str, Any] = {
        "source": str(path), "image": image, "display": display, "probs": [float(v) for v in probs],
        "class_names": run.class_names, "predicted": run.class_names[pred],
        "probability": float(probs[pred]), "positive_class": run.info.get("positive_class"),
        "threshold": run.threshold, "heatmap": None, "lesions": [],
        "slice_scores": None if slice_scores is None else [float(v) for v in slice_scores],
        "key_slices": key_slices, "spacing": tuple(image.spacing),
    }
    if not heatmap:
        return result
    target = pos if pos is not None else pred
    if stack:
        heat_small = explain(run.model, x, method=method, class_index=target)
        weights = slice_scores if slice_scores is not None else np.ones(len(x))
        heat = np.stack([_resize(h, display.shape[1:]) * w for h, w in zip(heat_small, weights)])
    else:
        heat_small = explain(run.model, x, method=method, class_index=target)[0]
        heat = _resize(heat_small, display.shape)
    heat = heat / max(float(heat.max()), 1e-8)
    result["heatmap"] = heat.astype(np.float32)
    lesion_possible = run.task != "binary" or probs[1] >= (run.threshold or 0.5)
    spacing = image.spacing if (image.has_geometry or image.modality != "OT") else None
    if not lesion_possible:
        result["lesions"] = []
    elif stack:
        # Candidates on the model-resolution stack (measured ~8 s -> <1 s for a 129x512x512 CT),
        # with the in-plane spacing scaled to match; masks are upsampled where a full-size mask is needed.
        small = np.stack([h * w for h, w in zip(heat_small, weights)])
        small = small / max(float(small.max()), 1e-8)
        scale = [1.0] + [o / s for o, s in zip(display.shape[1:], small.shape[1:])]
        sp = None if spacing is None else tuple(float(a) * f for a, f in zip(spacing, scale))
        lesions = heatmap_to_lesions(small, threshold=0.5, spacing=sp, max_lesions=5)
        for les in lesions:
            for key in ("centroid_px", "bbox_px", "extent_px", "peak_px"):
                if key in les:
                    les[key] = _scale_px(les[key], scale)
            les["mask"] = _full_size_mask(les, display.shape)
        result["lesions"] = lesions
    else:
        result["lesions"] = heatmap_to_lesions(heat, threshold=0.5, spacing=spacing, max_lesions=5)
    return result


def _scale_px(value: Any, scale: Sequence[float]) -> Any:
    """Map pixel coordinates found at model resolution back to the input's pixel grid."""
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple)):
        return type(value)(type(v)(round(x * f) for x in v) for v, f in zip(value, scale))
    if isinstance(value, (list, tuple)):
        return type(value)(round(float(v) * f, 2) for v, f in zip(value, scale))
    return value


def _full_size_mask(les: dict[str, Any], shape: Sequence[int]) -> np.ndarray:
    """A lesion mask at the input's full resolution (nearest-neighbour upsampling when needed)."""
    m = np.asarray(les["mask"], dtype=bool)
    if tuple(m.shape) == tuple(shape):
        return m
    factors = [t / s for t, s in zip(shape, m.shape)]
    if all(f == int(f) for f in factors):  # exact integer zoom: repeat (fast, exact nearest neighbour)
        for axis, f in enumerate(factors):
            m = m.repeat(int(f), axis=axis)
        return m
    from skimage.transform import resize

    return resize(m, shape, order=0, anti_aliasing=False, preserve_range=True).astype(bool)


def _inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Expand INPUT arguments: files, DICOM series folders, or folders of images."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise InputError("no such file or folder", p)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
            if not files:
                raise InputError("empty folder", p)
            from meddx.io.dicom import looks_like_dicom

            if any(looks_like_dicom(f) for f in files[:5]):
                out.append(p)  # a DICOM series
            else:
                out.extend(f for f in files if not f.name.endswith(("_mask.png", "_mask.tif")))
        else:
            out.append(p)
    return out


def predict_inputs(run_dir: str | Path, inputs: Sequence[str | Path], out: str | Path, heatmaps: bool = False,
                   method: str = "gradcam", tta: bool = False, log: Log = print) -> Path:
    """predictions.csv for every input (+ heatmap .npy, overlay PNG and lesions.csv with --heatmaps; `tta`:
    flip test-time augmentation, segmentation runs)."""
    from meddx.explain import lesions_table, save_overlay, save_volume_overlay

    run = _load_run(run_dir, tta)
    files = _inputs(inputs)
    if run.info.get("kind") == "segmenter":
        from meddx.train.segmentation import predict_segmentations
        return predict_segmentations(run, files, out, log=log)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, lesion_rows = [], []
    from tqdm.auto import tqdm

    for i, f in enumerate(tqdm(files, desc="predicting", unit="study", disable=len(files) < 10, leave=False)):
        with naming(f):
            study = predict_study(run, f, heatmap=heatmaps, method=method)
        stem = f"{i + 1:03d}_{_safe_stem(f)}"
        row = {"input": str(f), "predicted": study["predicted"], "probability": round(study["probability"], 6)}
        row.update({f"p_{c}": round(v, 6) for c, v in zip(run.class_names, study["probs"])})
        row["threshold"] = run.threshold
        row["n_slices"] = len(study["slice_scores"]) if study["slice_scores"] else 1
        row["key_slices"] = " ".join(map(str, study["key_slices"] or []))
        if heatmaps and study["heatmap"] is not None:
            hdir = out / "heatmaps"
            hdir.mkdir(exist_ok=True)
            np.save(hdir / f"{stem}_heatmap.npy", study["heatmap"])
            title = f"{study['predicted']} ({study['probability']:.2f})"
            if study["heatmap"].ndim == 3:
                save_volume_overlay(study["display"], study["heatmap"], hdir / f"{stem}_overlay.png",
                                    lesions=study["lesions"], title=title, spacing=study["spacing"])
            else:
                save_overlay(study["display"], study["heatmap"], hdir / f"{stem}_overlay.png",
                             lesions=study["lesions"], title=title)
            row["overlay"] = str(hdir / f"{stem}_overlay.png")
            for les in lesions_table(study["lesions"]):
                lesion_rows.append({"input": str(f), **les})
        rows.append(row)
        log(f"{f}: {row['predicted']} (p={row['probability']:.3f})")
    _write_csv(out / "predictions.csv", rows)
    if heatmaps:
        _write_csv(out / "lesions.csv", lesion_rows, empty_header=["input", "id"])
    log(f"wrote {out / 'predictions.csv'}" + (f", heatmaps in {out / 'heatmaps'}" if heatmaps else ""))
    return out / "predictions.csv"


def _safe_stem(p: Path) -> str:
    name = p.name
    for suf in (".nii.gz", ".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".nrrd", ".nii", ".mha"):
        if name.lower().endswith(suf):
            name = name[: -len(suf)]
            break
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40] or "input"


def _write_csv(path: Path, rows: list[dict[str, Any]], empty_header: list[str] | None = None) -> None:
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols or (empty_header or ["input"]))
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


# -- report ----------------------------------------------------------------------------

def report_studies(run_dir: str | Path, inputs: Sequence[str | Path], out: str | Path, include_phi: bool = False,
                   dicom: bool = True, tta: bool = False, log: Log = print) -> dict[str, Any]:
    """report.html + report.pdf per study (batch: one folder each plus index.html), DICOM SEG/SR when DICOM.

    A classifier RUN reports its decision with a Grad-CAM heatmap; a segmentation RUN its lesion mask,
    probability map and lesion sizes (`tta`: flip test-time augmentation)."""
    from meddx.report import render_batch, render_study_report

    run = _load_run(run_dir, tta)
    files = _inputs(inputs)
    studies = []
    for f in files:
        with naming(f):
            if run.info.get("kind") == "segmenter":
                from meddx.train.segmentation import segmentation_study
                s = segmentation_study(run, f)
            else:
                s = predict_study(run, f, heatmap=True)
        if include_phi:
            try:
                from meddx.io.deid import read_phi
                s["phi"] = read_phi(f)
            except (InputError, OSError, ValueError):
                s["phi"] = {}
        studies.append(s)
    out = Path(out)
    if len(studies) == 1:
        paths = render_study_report(studies[0], run.info, out, include_phi=include_phi)
        if dicom:
            paths.update(_dicom_outputs(studies[0], out, log))
        log(f"wrote {paths['html']} and {paths['pdf']}")
        return paths
    res = render_batch(studies, run.info, out, include_phi=include_phi)
    log(f"wrote {len(studies)} reports and {res['index']}")
    return res


def _dicom_outputs(study: dict[str, Any], out: Path, log: Log) -> dict[str, Any]:
    """DICOM SEG of the heatmap lesions and a TID 1500 SR, when the input was a DICOM series."""
    image = study["image"]
    refs = image.metadata.get("dicom_refs")
    if not refs or image.spatial_ndim != 3 or image.is_sequence:
        return {}
    from meddx.report import write_dicom_seg, write_dicom_sr

    mask = np.zeros(image.array.shape[:3], dtype=np.uint8)
    for les in study["lesions"]:
        if "mask" in les:
            mask |= _full_size_mask(les, mask.shape).astype(np.uint8)
    paths: dict[str, Any] = {}
    try:
        finding = {"predicted": study["predicted"], "probability": study["probability"],
                   "threshold": study["threshold"], "model": "meddx"}
        if mask.any():
            paths["seg"] = str(write_dicom_seg(image, mask, study["source"], out / "lesions_seg.dcm"))
        paths["sr"] = str(write_dicom_sr(image, finding, study["lesions"], study["source"], out / "finding_sr.dcm"))
    except (ValueError, TypeError, AttributeError) as exc:
        log(f"warning: could not write DICOM SEG/SR: {exc}")
    return paths


# -- demo ------------------------------------------------------------------------------

# A fast cnn: 16-32-64 filters, strided stem, one pooling -> a 16x16 Grad-CAM grid at 64 px (an 8x8 grid caps
# the exact pointing game near 0.6 on these 5-10 px lesions) and a global-max-pooling head.
DEMO_MODEL: dict[str, Any] = {"filters": [16, 32, 64], "pools": 1, "pooling": "max"}
# The same without the strided stem: a 32x32 Grad-CAM grid, about 4x the compute. The demo's default: measured on
# the demo data, 40 epochs (AMD EPYC): test AUC 0.989, exact pointing game 0.943; 30 epochs (Intel Xeon, 2026-11-30):
# 0.986 / 0.932, whole demo 2.6 min. DEMO_MODEL, 30 epochs: 0.985 / 0.739 on the AMD box but 0.477 on the Intel one.
FINE_CAM_MODEL: dict[str, Any] = {**DEMO_MODEL, "strided_stem": False}


def run_demo(out: str | Path = "meddx-demo", data: str | Path | None = None, n: int = 1200, size: int = 64,
             epochs: int | None = None, minutes: float = 3.0, seed: int = 0, log: Log = print,
             model_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole pipeline on built-in synthetic lesion slices (or `data`): train, evaluate, predict, report.

    `model_options` replaces FINE_CAM_MODEL for the synthetic data (e.g. DEMO_MODEL: 4x faster, coarser heatmaps)."""
    from meddx.data.datasets import load_dataset, load_manifest
    from meddx.data.synthetic import CLASS_NAMES, write_synthetic_folder
    from meddx.train.config import TrainConfig
    from meddx.train.fit import train

    t0 = time.monotonic()
    out = Path(out)
    run_dir = out / "run"
    if data is None:
        log(f"[1/5] generating {n} synthetic {size}x{size} slices with and without lesions -> {out / 'data'}")
        manifest = write_synthetic_folder(out / "data", n=n, size=size, seed=seed)
        ds = load_manifest(manifest, class_names=CLASS_NAMES)
        data_path: Path = manifest
    else:
        data_path = Path(data)
        ds = load_dataset(data_path)
        log(f"[1/5] using {data_path}")
    demo_model = model_options or FINE_CAM_MODEL
    cfg = TrainConfig(epochs=epochs or 30, max_minutes=minutes, seed=seed, patience=8,
                      image_size=size if data is None else None, model_options=demo_model if data is None else None)
    log("[2/5] training")
    train(ds, run_dir, cfg, overwrite=True, log=log)
    log("[3/5] evaluating on the held-out test split")
    metrics = evaluate_run(run_dir, data_path, out / "eval", split="test", report=True, log=log)
    log("[4/5] predicting with heatmaps")
    test_items = _demo_examples(run_dir, ds)
    predict_inputs(run_dir, test_items, out / "predictions", heatmaps=True, log=lambda s: None)
    log("[5/5] writing a diagnostic report")
    report = report_studies(run_dir, test_items[:1], out / "report", dicom=False, log=log)
    summary = {"out": str(out), "run": str(run_dir), "metrics": str(out / "eval" / "metrics.json"),
               "evaluation_report": str(out / "eval" / "report.html"),
               "predictions": str(out / "predictions" / "predictions.csv"),
               "report": str(report["html"]), "auc": metrics.get("auc"),
               "minutes": round((time.monotonic() - t0) / 60, 2)}
    log("\nmeddx demo finished in {minutes} min. Outputs:\n"
        "  trained model        {run}\n  test metrics         {metrics}\n  evaluation report    {evaluation_report}\n"
        "  predictions+heatmaps {predictions}\n  diagnostic report    {report}".format(**summary))
    return summary


def _demo_examples(run_dir: Path, ds: Any, k: int = 4) -> list[str]:
    """A few test-split files (positives first) for the demo's predict and report steps."""
    rows = list(csv.DictReader((run_dir / "splits.csv").open()))
    test = [r for r in rows if r["split"] == "test"]
    test.sort(key=lambda r: r["label"] != ds.class_names[-1])
    items = [r["item"] for r in test[:k]]
    if not items or not Path(items[0]).exists():
        raise DataError("demo data has no test files to predict on", run_dir)
    return items
