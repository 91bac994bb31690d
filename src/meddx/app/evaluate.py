"""`meddx evaluate`: metrics, curves and calibration of a RUN on one split of DATA (classifiers, segmenters,
sequence classifiers and slice labellers)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from meddx.app.common import Log, logger_or
from meddx.app.outputs import writes_output_folder
from meddx.errors import DataError, naming
from meddx.utils import atomic_write_json


def split_indices(predictor: Any, ds: Any, split: str, log: Log) -> np.ndarray:
    """Indices of `split` ("all": every case) as training recorded them (the RUN's splits.csv, matched by content
    hash) when DATA is the RUN's own data, else DATA's own splits. A test case with the content of a case the
    RUN trained or selected on is refused; with `all` such cases are counted and logged; train/val warn."""
    from meddx.data.splits import assign_splits
    from meddx.train.config import recorded_val_fraction

    cfg = predictor.info.config
    recorded = _recorded(predictor)
    same = bool(predictor.info.source) and _same_path(predictor.info.source, ds.source)
    seen = hashes = None
    if recorded is not None:
        from meddx.data.integrity import recorded_split_of

        seen, seen_as, hashes = recorded_split_of(ds, recorded)
    if same and seen is not None:
        splits = np.where(seen == "", "test", seen)  # the RUN's own split; cases it never saw are held out
        new = int((seen == "").sum())
        if new:
            log(f"note: {new} case(s) of DATA are not in the RUN's splits.csv (added since training?); "
                "they count as test")
    else:
        splits = assign_splits(ds, recorded_val_fraction(cfg), cfg.get("test_fraction", 0.15),
                               cfg.get("seed", 0))
    idx = np.arange(len(ds)) if split == "all" else np.flatnonzero(splits == split)
    if len(idx) == 0:
        avail = ", ".join(sorted(set(splits) - {""})) or "none"
        raise DataError(f"no '{split}' split in this data (available: {avail})", ds.source)
    if seen is not None:
        used = [int(i) for i in idx if seen[i] in ("train", "val")]
        if used and split in ("test", "all"):
            names = ds.item_names()
            i = used[0]
            what = "trained" if seen[i] == "train" else "selected its model"
            example = f"{names[i]} is {seen_as[i]} of its {seen[i]} split ({predictor.path}/splits.csv)"
            ds.extra["seen_in_training"] = len(used)
            if split == "test":
                if len(used) == len(idx):
                    raise DataError(f"every test case is a case the RUN {what} on (same content), e.g. {example}; "
                                    "evaluate on held-out cases", ds.source)
                # refused from the test metrics, loudly: a memorised case would flatter them
                idx = np.setdiff1d(idx, used)
                ds.extra["excluded_seen_in_training"] = len(used)
                log(f"warning: {len(used)} test case(s) have the content of cases the RUN was trained or selected "
                    f"on (matched by content hash to {predictor.path}/splits.csv); left out of the test metrics "
                    f"({len(idx)} cases scored)")  # no file names in logs (privacy); the error above names one
            else:
                log(f"warning: {len(used)} of the {len(idx)} cases were used for training or model selection; "
                    "metrics over 'all' are optimistic")
    if split in ("train", "val") and same:
        log(f"warning: the '{split}' split was used for {'training' if split == 'train' else 'model selection'}; "
            f"its metrics are optimistic")
    _check_labels_seen(predictor, ds, idx)
    return idx


def _recorded(predictor: Any) -> dict[str, tuple[str, str]] | None:
    from meddx.data.integrity import read_recorded_splits

    return None if predictor.path is None else read_recorded_splits(Path(predictor.path) / "splits.csv")


def _same_path(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(str(b)).resolve()
    except (OSError, RuntimeError):
        return False


def _check_labels_seen(predictor: Any, ds: Any, idx: np.ndarray) -> None:
    """A label the RUN never had a training case of cannot be scored: an error naming it."""
    if getattr(ds, "task", None) not in ("binary", "multiclass") or predictor.kind not in ("classifier",
                                                                                         "sequence_classifier"):
        return
    counts = ((predictor.info.data.get("summary") or {}).get("splits") or {}).get("train", {}).get("counts")
    if not isinstance(counts, dict):
        return
    names = list(ds.class_names)
    present = {names[int(k)] for k in np.unique(np.asarray(ds.labels)[idx]) if 0 <= int(k) < len(names)}
    unseen = sorted(n for n in present if int(counts.get(n, 0) or 0) == 0)
    if unseen:
        raise DataError(f"label(s) {', '.join(map(repr, unseen))} never occurred in the RUN's training data; the "
                        "model cannot be scored on them", ds.source)


def dataset_for_run(predictor: Any, data: Any) -> Any:
    """DATA (a path or a `Dataset`) with the RUN's class names, refusing labels the model does not know."""
    from meddx.data.datasets import Dataset, load_dataset, load_manifest

    names = predictor.class_names
    if isinstance(data, Dataset):
        ds, p = data, Path(str(data.source))
    else:
        p = Path(data)
        if p.suffix.lower() in (".csv", ".tsv") or (p.is_dir() and (p / "manifest.csv").is_file()):
            return load_manifest(p if p.suffix else p / "manifest.csv", class_names=names)
        ds = load_dataset(p)
    if ds.kind == "folder" and ds.class_names != names:
        unknown = sorted(set(ds.class_names) - set(names))
        if unknown:
            raise DataError(f"unknown class folder(s) {', '.join(unknown)}; the model knows {', '.join(names)}", p)
        remap = np.asarray([names.index(n) for n in ds.class_names])
        ds.labels = remap[ds.labels]
        ds.class_names = names
    in_memory = ds.kind in ("npz", "arrays")
    if in_memory and ds.task != "multilabel" and len(ds.class_names) > len(names):
        raise DataError(f"labels go up to {len(ds.class_names) - 1} but the model has {len(names)} classes", p)
    if in_memory:
        ds.class_names = names
        ds.task = predictor.task
    return ds


@writes_output_folder("evaluate", "run_dir", "data", "split")
def evaluate_run(run_dir: str | Path, data: str | Path, out: str | Path, split: str = "test",
                 report: bool = False, tta: bool = False, log: Log | None = None,
                 stack_min_fraction: float | None = None, coverage: float = 0.9) -> dict[str, Any]:
    """Metrics, curves and calibration of a RUN on one split of DATA, written to `out` (`tta`: flip
    test-time augmentation, segmentation runs; `stack_min_fraction`: replaces a 2D segmenter's stored
    stack post-processing; `coverage`: target of a classifier's conformal prediction sets)."""
    from meddx.infer import load

    from meddx.app.common import evaluator_for

    log = logger_or(log)
    predictor = load(run_dir, tta=tta, stack_min_fraction=stack_min_fraction)
    if hasattr(predictor, "set_coverage"):
        predictor.set_coverage(coverage)
    run = evaluator_for(predictor)
    if predictor.kind == "classifier":
        return evaluate_classifier(predictor, data, out, split=split, report=report, log=log)
    return run(predictor, data, out, split=split, log=log)


def evaluate_classifier(predictor: Any, data: str | Path, out: str | Path, split: str = "test",
                        report: bool = False, log: Log | None = None) -> dict[str, Any]:
    """metrics.json (AUC + CI, accuracy, calibration, per class; Grad-CAM localisation where masks exist) + plots."""
    from meddx.transforms.prepare import load_masks, materialise

    log = logger_or(log)
    ds = dataset_for_run(predictor, data)
    idx = split_indices(predictor, ds, split, log)
    sub = ds.subset(idx)
    x = materialise(sub, predictor.preprocessing)
    probs = predictor.predict_proba(x)
    metrics = _score_split(predictor, ds, sub, probs, out, split)
    if hasattr(predictor, "calibration_metrics"):  # temperature scaling, conformal sets
        metrics.update(predictor.calibration_metrics(sub.labels, probs))
    from meddx.data.integrity import check_mask_shapes

    check_mask_shapes(sub)  # a mask of another size than its image is an error, not resized to fit
    masks = load_masks(sub, tuple(predictor.preprocessing.output_shape[:-1]))
    if masks is not None and predictor.task == "binary":
        metrics["localisation"] = _heatmap_localisation(predictor, x, sub.labels, masks)
    atomic_write_json(Path(out) / "metrics.json", metrics)
    if report:
        from meddx.report import render_evaluation_report

        metrics["report"] = str(render_evaluation_report(out, predictor.path))
    _log_metrics(metrics, out, log)
    return metrics


def evaluate_sequences(predictor: Any, data: Any, out: str | Path, split: str = "test",
                       log: Log | None = None) -> dict[str, Any]:
    """metrics.json (AUC + CI grouped by patient, accuracy, calibration, per class) + plots for a sequence RUN."""
    from meddx.models.outputs import logits_to_probs
    from meddx.transforms.frames import read_study

    log = logger_or(log)
    ds = dataset_for_run(predictor, data)
    idx = split_indices(predictor, ds, split, log)
    sub = ds.subset(idx)
    xs = []
    for path in sub.items:
        with naming(path):
            xs.append(predictor.frames_of(read_study(path))[0])
    if len({x.shape for x in xs}) == 1:  # uniform sampling: one batched call
        logits = predictor.predict_logits(np.concatenate(xs), batch_size=16)
    else:
        logits = np.concatenate([predictor.predict_logits(x) for x in xs])
    metrics = _score_split(predictor, ds, sub, logits_to_probs(logits, predictor.task), out, split)
    metrics["frames"] = predictor.info.to_dict()["sequence"]
    atomic_write_json(Path(out) / "metrics.json", metrics)
    _log_metrics(metrics, out, log)
    return metrics


def _score_split(predictor: Any, ds: Any, sub: Any, probs: np.ndarray, out: str | Path,
                 split: str) -> dict[str, Any]:
    """Metrics and plots of one split's class probabilities at the RUN's threshold (CIs grouped by patient),
    with the split and DATA recorded."""
    from meddx.evaluate.plots import write_classification_outputs

    threshold = predictor.threshold if predictor.threshold is not None else 0.5
    metrics = write_classification_outputs(sub.labels, probs, predictor.class_names, predictor.task, out,
                                           threshold=threshold, groups=sub.patient_ids,
                                           seed=predictor.info.config.get("seed", 0))
    metrics.update(split=split, data=str(ds.source))
    for key in ("excluded_seen_in_training", "seen_in_training"):  # honest-evaluation marks (split_indices)
        if key in ds.extra:
            metrics[key] = int(ds.extra[key])
    return metrics


def _heatmap_localisation(predictor: Any, x: np.ndarray, y: np.ndarray, masks: np.ndarray) -> dict[str, Any]:
    """Grad-CAM pointing game and best-threshold IoU on positive cases that have a lesion mask."""
    from meddx.evaluate.localisation import localisation_metrics
    from meddx.explain import grad_cam

    pos = np.flatnonzero((y == 1) & (masks.reshape(len(masks), -1).any(axis=1)))
    if len(pos) == 0:
        return {"n": 0}
    heat = grad_cam(predictor.model, x[pos], class_index=1)
    loc = localisation_metrics(heat, masks[pos])
    loc.pop("per_case", None)
    loc["method"] = "gradcam"
    return loc


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _log_metrics(metrics: dict[str, Any], out: str | Path, log: Log) -> None:
    ci = metrics.get("auc_ci") or [None, None]
    log(f"{metrics.get('split', '')} split: n={metrics['n']}  AUC {_fmt(metrics.get('auc'))} "
        f"(95% CI {_fmt(ci[0])}-{_fmt(ci[1])})  accuracy {_fmt(metrics.get('accuracy'))}  "
        f"ECE {_fmt(metrics.get('ece'))}  Brier {_fmt(metrics.get('brier'))}")
    for c in metrics.get("per_class", []):
        log(f"  {c['name']:<20} n={c['n']:<5} sens {_fmt(c.get('sensitivity'))}  spec {_fmt(c.get('specificity'))}  "
            f"PPV {_fmt(c.get('ppv'))}  F1 {_fmt(c.get('f1'))}")
    if "localisation" in metrics and metrics["localisation"].get("n"):
        loc = metrics["localisation"]
        log(f"  Grad-CAM pointing game {_fmt(loc.get('pointing_hit_rate'))} on {loc.get('n_evaluated')} lesion "
            f"cases; best-threshold IoU {_fmt(loc.get('mean_best_iou'))}")
    log(f"wrote {Path(out) / 'metrics.json'} and plots in {out}")


def evaluate_segmenter(predictor: Any, data: Any, out: str | Path, split: str = "test",
                       log: Log | None = None) -> dict[str, Any]:
    """out/metrics.json (dice, iou, hd95, asd, lesion sensitivity, FP/image, lesion-slice Dice) + panel PNG."""
    from meddx.evaluate.segmentation import patient_dice, segmentation_metrics
    from meddx.evaluate.segmentation_panel import save_segmentation_panel
    from meddx.infer.display import middle_channel_display
    from meddx.train.seg_data import load_segmentation_dataset, read_pair, spacing_of
    from meddx.transforms.post import postprocess_stacks

    log = logger_or(log)
    ds = load_segmentation_dataset(data)
    idx = split_indices(predictor, ds, split, log)
    preds, truths, spacings, shown = [], [], [], []
    t0 = time.monotonic()
    for i in idx:
        x, truth, img = read_pair(ds.items[i], ds.masks[i], predictor.preprocessing,  # type: ignore[index]
                                  native=predictor.sliding)
        _, pred = predictor.segment_array(x, truth.shape)
        preds.append(pred)
        truths.append(truth)
        spacings.append(spacing_of(img))
        shown.append(img)
    fraction = predictor.settings.stack_min_fraction
    if fraction > 0 and predictor.spatial_ndim == 2:
        if ds.patient_ids is None:
            log("note: stack post-processing needs patient IDs to group slices; this data has none, not applied")
        else:
            preds, skipped = postprocess_stacks(preds, ds.patient_ids[idx], [ds.items[i] for i in idx], fraction)
            if skipped:
                log(f"warning: {skipped} patient(s) have slices of different shapes; their slices were not "
                    f"stack post-processed")
    known = all(s is not None for s in spacings)
    metrics = segmentation_metrics(preds, truths, spacings if known else None)
    metrics["units"] = "mm" if known else "px"
    empty = [c for c in metrics["per_case"] if c["truth_empty"]]
    metrics["false_positive_rate_empty_cases"] = (
        float(np.mean([not c["pred_empty"] for c in empty])) if empty else None)
    names = ds.item_names()
    for c, i in zip(metrics["per_case"], idx):
        c["item"] = names[i]
        if ds.patient_ids is not None:
            c["patient_id"] = str(ds.patient_ids[i])
    if ds.patient_ids is not None and predictor.spatial_ndim == 2:
        pdice = patient_dice(preds, truths, ds.patient_ids[idx])
        metrics["patient_dice"] = pdice["mean"]
        metrics["dice_per_patient"] = pdice["per_patient"]
        if pdice["skipped"]:
            log(f"warning: {len(pdice['skipped'])} patient(s) have slices of different shapes; left out of "
                f"patient_dice")
    metrics.update(split=split, run=str(predictor.path), data=str(ds.source), model=predictor.info.model,
                   tta_flip_axes=list(predictor.tta_axes), seconds=round(time.monotonic() - t0, 1))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "metrics.json", metrics)
    order = sorted(range(len(idx)), key=lambda k: -int(truths[k].sum()))
    pick = [k for k in order if truths[k].any()][:6] or order[:6]
    save_segmentation_panel([(middle_channel_display(shown[k]), truths[k], preds[k], f"{Path(names[idx[k]]).name}  "
                              f"Dice {metrics['per_case'][k]['dice']:.2f}") for k in pick],
                            out / "segmentation_panel.png")
    log(f"{split}: n={metrics['n']}, Dice {_fmt(metrics['dice'])} (lesion cases "
        f"{_fmt(metrics['dice_lesion_cases'])}, n={metrics['n_lesion_cases']}), HD95 {_fmt(metrics['hd95'])} "
        f"{metrics['units']}, lesion sensitivity {_fmt(metrics['lesion_sensitivity'])}, FP/image "
        f"{_fmt(metrics['fp_per_image'])} -> {out / 'metrics.json'}")
    return metrics


def evaluate_slice_labeller(predictor: Any, data: str | Path, out: str | Path, split: str = "test",
                            log: Log | None = None) -> dict[str, Any]:
    """metrics.json (per-slice precision / recall / F1, raw vs smoothed, per patient and pooled over the split's
    slices) + slice_f1.png for a slice-labelling RUN on DATA's labelled stacks. Patients are split as training
    recorded them; patients the RUN never saw count as "test"."""
    from meddx.classic.slice_labelling import slice_prf
    from meddx.classic.slice_training import load_labelled_stacks

    log = logger_or(log)
    if split not in ("train", "test", "all"):
        raise DataError(f"slice-labelling RUNs have 'train' and 'test' splits (or 'all'), not '{split}'", data)
    s = predictor.settings
    stacks = load_labelled_stacks(data, s.frame_size, s.channels)
    known = predictor.info.data.get("splits") or {}
    pick = [i for i, p in enumerate(stacks["patient_ids"]) if split == "all" or known.get(p, "test") == split]
    if not pick:
        avail = ", ".join(sorted({known.get(p, "test") for p in stacks["patient_ids"]}))
        raise DataError(f"no '{split}' patients in this data (available: {avail})", data)
    if split == "train":
        log("warning: the 'train' split was used for training; its metrics are optimistic")
    t0 = time.monotonic()
    labels, raw_y, smooth_y, raw_p, per_patient = [], [], [], [], []
    for i in pick:
        res = predictor.label_frames(stacks["frames"][i])
        y = stacks["labels"][i]
        labels.append(y)
        raw_y.append(res["raw_label"])
        smooth_y.append(res["label"])
        raw_p.append(res["raw_probability"])
        nums = stacks["numbers"][i]
        pos, pred = np.flatnonzero(y), np.flatnonzero(res["label"])
        per_patient.append({
            "patient_id": stacks["patient_ids"][i], "split": known.get(stacks["patient_ids"][i], "test"),
            "n_slices": int(len(y)), "positive_slices": int(y.sum()),
            "raw": slice_prf([y], [res["raw_label"]]), "smoothed": slice_prf([y], [res["label"]]),
            "true_extent": [int(nums[pos[0]]), int(nums[pos[-1]])] if pos.size else None,
            "predicted_extent": [int(nums[pred[0]]), int(nums[pred[-1]])] if pred.size else None})
    raw, smoothed = slice_prf(labels, raw_y), slice_prf(labels, smooth_y)
    metrics: dict[str, Any] = {
        "task": "slice-labelling", "smoother": s.smoother, "split": split, "run": str(predictor.path),
        "data": str(data), "n": raw["n"], "n_patients": len(pick), "positive_slices": raw["positive"],
        "raw": raw, "smoothed": smoothed, "f1_raw": raw["f1"], "f1_smoothed": smoothed["f1"],
        "f1_gain": smoothed["f1"] - raw["f1"],
        "f1_raw_mean_per_patient": float(np.mean([p["raw"]["f1"] for p in per_patient])),
        "f1_smoothed_mean_per_patient": float(np.mean([p["smoothed"]["f1"] for p in per_patient])),
        "per_patient": per_patient, "seconds": round(time.monotonic() - t0, 1)}
    y_all, p_all = np.concatenate(labels), np.concatenate(raw_p)
    if 0 < y_all.sum() < y_all.size:
        from sklearn.metrics import roc_auc_score

        metrics["auc_raw"] = float(roc_auc_score(y_all, p_all))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics["plots"] = {"slice_f1": str(_slice_f1_plot(metrics, out / "slice_f1.png"))}
    atomic_write_json(out / "metrics.json", metrics)
    log(f"{split}: {len(pick)} patients, {raw['n']} slices ({raw['positive']} with lesion): per-slice F1 raw "
        f"{_fmt(raw['f1'])} -> {s.smoother.upper()}-smoothed {_fmt(smoothed['f1'])} (precision "
        f"{_fmt(raw['precision'])} -> {_fmt(smoothed['precision'])}, recall {_fmt(raw['recall'])} -> {_fmt(smoothed['recall'])}) "
        f"-> {out / 'metrics.json'}")
    return metrics


def _slice_f1_plot(metrics: dict[str, Any], path: Path) -> Path:
    """Per-patient and pooled per-slice F1, raw vs smoothed, as grouped bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from meddx.utils import atomic_path

    pats = metrics["per_patient"]
    names = [p["patient_id"][-12:] for p in pats] + ["pooled"]
    raw = [p["raw"]["f1"] for p in pats] + [metrics["f1_raw"]]
    smooth = [p["smoothed"]["f1"] for p in pats] + [metrics["f1_smoothed"]]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(names) + 2), 3.2))
    ax.bar(x - 0.2, raw, 0.4, label="raw", color="#999999")
    ax.bar(x + 0.2, smooth, 0.4, label=f"{metrics['smoother'].upper()}-smoothed", color="#1f77b4")
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("per-slice F1")
    ax.set_title(f"Slice labelling, {metrics['split']} split ({metrics['n']} slices)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
