"""Per-study diagnostic report (report.html + report.pdf) and batch reports with an index.

De-identified by default: the header shows only technical fields from `Image.metadata`, the
study date reduced to its year (full dates are identifiers under HIPAA Safe Harbor), no source
path; `include_phi=True` adds `study["phi"]`, the full study date and the source path.

Slightly over 500 lines: one renderer whose sections (finding, heatmaps or masks, slices or frames, lesions,
model card) share the document builder; batch reports and the index are the rest.
"""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from meddx.errors import InputError
from meddx.report.document import Doc, write_html, write_pdf
from meddx.utils import atomic_path, atomic_write_text

DISCLAIMER = ("Decision support only: this report was produced automatically by software (meddx) to support, "
              "not replace, the judgement of a qualified clinician. It is not a diagnosis; confirm every "
              "finding on the original images.")

HIGH_MARGIN = 0.25
MODERATE_MARGIN = 0.10
WEAK_AUC = 0.60  # a classifier validated under this AUC is "unreliable" in every report it writes


def confidence_statement(probability: float, threshold: float | None = 0.5,
                         second_best: float | None = None) -> tuple[str, str]:
    """(level, plain-language sentence) from how far the probability is from the decision point.

    Binary: distance of the positive-class probability from the operating threshold. Multi-class
    (threshold None): gap between the top two class probabilities. >= 0.25 high, >= 0.10 moderate,
    else borderline.
    """
    p = float(probability)
    if threshold is not None:
        margin = abs(p - float(threshold))
        where = f"{margin:.2f} from the operating threshold {float(threshold):.2f}"
    else:
        other = float(second_best) if second_best is not None else 1.0 - p
        margin = p - other
        where = f"{margin:.2f} above the next most likely class"
    if margin >= HIGH_MARGIN:
        return "high", f"High confidence: the probability is {where}."
    if margin >= MODERATE_MARGIN:
        return "moderate", f"Moderate confidence: the probability is {where}; review the key images."
    return "borderline", f"Borderline, review carefully: the probability is only {where}."


WITHHELD = ("No diagnosis: this input is outside what the model was trained on, so the model cannot judge it. "
            "Have it read by a clinician, or run again with --allow-ood to see the model's output anyway "
            "(it would not be reliable).")


def ood_statement(study: dict[str, Any]) -> str:
    """Plain words for an out-of-distribution verdict (shown at the top of the report)."""
    reason = str(study.get("ood_reason") or "it differs from the images the model was trained on")
    if study.get("diagnosis_withheld"):
        return (f"Out of distribution: this input is outside what the model was trained on ({reason}). "
                "No diagnosis is given.")
    return (f"Out of distribution: this input is outside what the model was trained on ({reason}). "
            "The finding below is not a reliable diagnosis; do not use it.")


def prediction_set_statement(pred_set: Any, coverage: Any = None) -> str:
    """The conformal prediction set in words: one class, several the model cannot separate, or none."""
    labels = [str(c) for c in (pred_set.split("|") if isinstance(pred_set, str) else pred_set or []) if str(c)]
    cov = f" ({float(coverage):.0%} coverage)" if coverage is not None else ""
    if not labels:
        return f"Prediction set{cov}: empty (no class is plausible enough here); review carefully."
    if len(labels) == 1:
        return f"Prediction set{cov}: {labels[0]}."
    return f"Prediction set{cov}: {' or '.join(labels)}: the model cannot separate these here."


def agree_with_set(level: str, sentence: str, study: dict[str, Any]) -> tuple[str, str]:
    """"High confidence" only when the calibrated probability and the conformal set agree: the set is the predicted
    class alone and its calibrated probability reaches the set's coverage; otherwise it becomes "moderate"."""
    pred_set = study.get("prediction_set")
    if level != "high" or pred_set is None:
        return level, sentence
    cal = study.get("calibrated_probabilities") or {}
    predicted = study.get("predicted")
    p_cal = cal.get(predicted)
    target = float(study.get("coverage") or 0.9)
    if list(pred_set) == [predicted] and (p_cal is None or p_cal >= target):
        return level, sentence
    why = (f"the calibrated prediction set holds {' or '.join(map(str, pred_set))}" if list(pred_set) != [predicted]
           else f"the calibrated probability of '{predicted}' is under {target:.0%}")
    return "moderate", sentence.replace("High confidence:", "Moderate confidence:").rstrip(".") + \
        f", but {why}; review the key images."


def weak_model(level: str, sentence: str, run_info: dict[str, Any]) -> tuple[str, str]:
    """A classifier whose validation AUC is under `WEAK_AUC` (little better than chance, or worse) backs no
    "high" or "moderate" confidence: the level becomes "borderline" and the sentence says why first."""
    auc = (run_info.get("val_metrics") or {}).get("auc")
    if run_info.get("kind") == "segmenter" or auc is None or not math.isfinite(float(auc)) or auc >= WEAK_AUC:
        return level, sentence
    margin = sentence.split(": ", 1)[-1]  # "the probability is ... " without the level it no longer has
    return "borderline", (f"Unreliable model: it scored a validation AUC of {float(auc):.2f} (under {WEAK_AUC:.2f}, "
                          f"little better than chance or worse), so its output is no basis for a decision; {margin}")


def study_confidence(study: dict[str, Any], run_info: dict[str, Any]) -> tuple[str, str]:
    """(level, sentence) of a study's finding: the probability's margin from the decision point
    (`confidence_statement`), lowered when the conformal set disagrees (`agree_with_set`) or the model validated
    poorly (`weak_model`)."""
    p_pos = _positive_probability(study)
    threshold = study.get("threshold", run_info.get("threshold"))
    if threshold is not None and p_pos is not None:
        level, sentence = confidence_statement(p_pos, float(threshold))
    else:
        probs = sorted((float(p) for p in study.get("probs") or [study["probability"]]), reverse=True)
        level, sentence = confidence_statement(float(study["probability"]), None, probs[1] if len(probs) > 1 else None)
    level, sentence = agree_with_set(level, sentence, study)
    return weak_model(level, sentence, run_info)


def _positive_probability(study: dict[str, Any]) -> float | None:
    pos = study.get("positive_class")
    names = list(study.get("class_names") or [])
    probs = list(study.get("probs") or [])
    if pos is None:
        return None
    if pos in names and len(probs) == len(names):
        return float(probs[names.index(pos)])
    if study.get("predicted") == pos:
        return float(study["probability"])
    return None


def _fmt_date(value: Any) -> str:
    s = str(value or "")
    if len(s) >= 8 and s[:8].isdigit():
        try:
            return _dt.date(int(s[:4]), int(s[4:6]), int(s[6:8])).isoformat()
        except ValueError:
            return s
    return s


def _num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "–" if not math.isfinite(f) else f"{f:.{digits}f}"


def _header_rows(study: dict[str, Any], include_phi: bool) -> list[list[Any]]:
    image = study.get("image")
    meta = dict(getattr(image, "metadata", {}) or {})
    rows: list[list[Any]] = []
    rows.append(["Modality", getattr(image, "modality", None) or meta.get("Modality") or "–"])
    rows.append(["Body part", meta.get("BodyPartExamined") or "not stated"])
    date = meta.get("StudyDate") or meta.get("SeriesDate")
    if date:
        rows.append(["Study date", _fmt_date(date) if include_phi else f"{str(date)[:4]} (year only; full date withheld)"])
    for key, label in (("StudyDescription", "Study description"), ("SeriesDescription", "Series description")):
        if meta.get(key):
            rows.append([label, meta[key]])
    if image is not None:
        kind = ("sequence of " if image.is_sequence else "") + ("3D volume" if image.spatial_ndim == 3 else "2D image")
        rows.append(["Image", kind])
        shape = getattr(image, "shape", None) or image.array.shape  # a lazy video knows its shape undecoded
        rows.append(["Shape (array order)", " × ".join(str(s) for s in shape)])
        axes = ("z", "y", "x") if image.spatial_ndim == 3 else ("y", "x")
        rows.append(["Spacing (mm)", ", ".join(f"{a} {s:.3g}" for a, s in zip(axes, image.spacing))
                     + ("" if image.has_geometry else " (no physical geometry in the file)")])
        orient = image.orientation_code() if image.spatial_ndim == 3 else ""
        if orient:
            rows.append(["Orientation (x, y, z index axes)", orient])
    disp = study.get("display")
    if disp is not None:
        sp = study.get("spacing")
        rows.append(["Model's view", " × ".join(str(s) for s in np.shape(disp))
                     + (f" at {', '.join(f'{float(s):.3g}' for s in sp)} mm" if sp else "")])
    if include_phi:
        rows.append(["Source", study.get("source", "")])
    return rows


def _run_sens_spec(run_info: dict[str, Any], positive: str | None) -> tuple[Any, Any]:
    vm = run_info.get("val_metrics") or {}
    sens, spec = vm.get("sensitivity"), vm.get("specificity")
    if (sens is None or spec is None) and positive is not None:
        for pc in vm.get("per_class") or []:
            if pc.get("name") == positive:
                sens, spec = pc.get("sensitivity"), pc.get("specificity")
    return sens, spec


def _segmentation_finding(study: dict[str, Any], run_info: dict[str, Any]) -> str:
    """One sentence: how the mask was made and how much lesion it holds."""
    pp = study.get("postprocess") or {}
    thr = float(study.get("threshold") or run_info.get("threshold") or 0.5)
    n = len(study.get("lesions") or [])
    amount = f"{int(study.get('n_voxels') or 0)} px"
    if study.get("volume_ml") is not None:
        ml = float(study["volume_ml"])
        amount = f"{ml:.2f} mL" if np.ndim(study.get("heatmap")) == 3 else f"{ml * 1000:.0f} mm²"
    tta = " (averaged over the input and its flips)" if study.get("tta_flip_axes") else ""
    min_size = int(pp.get("min_size") or 0)
    stack = float(pp.get("stack_min_fraction") or 0.0)
    across = (f" Across slices, components with fewer than {stack:.2f} × the largest's voxels dropped."
              if stack > 0 and np.ndim(study.get("heatmap")) == 3 else "")
    return (f"Lesion pixels: probability ≥ {thr:.2f}{tta}; connected components of ≥ {min_size} px kept.{across} "
            f"Segmented: {n} lesion{'s' if n != 1 else ''}, {amount} in total.")


def _lesion_rows(lesions: Sequence[dict[str, Any]], is_sequence: bool,
                 score_name: str = "Peak relevance") -> tuple[list[str], list[list[Any]]]:
    three_d = any(len(l.get("centroid_px", ())) == 3 for l in lesions)
    axis0 = "frames" if is_sequence else "slices"
    header = ["#", "Location", "Size (mm)", "Volume (mL)" if three_d else "Area (mm²)", score_name]
    rows = []
    for k, l in enumerate(lesions, start=1):
        c = l.get("centroid_px", ())
        loc = "centre (px) " + ", ".join(f"{a}={v:.0f}" for a, v in zip(("z", "y", "x")[-len(c):], c))
        bbox = l.get("bbox_px")
        if bbox is not None and len(bbox) == 3:
            loc = f"{axis0} {bbox[0][0]}–{bbox[0][1]}; " + loc
        if l.get("centroid_lps_mm"):
            loc += "; LPS (mm) " + ", ".join(f"{v:.1f}" for v in l["centroid_lps_mm"])
        ext = l.get("extent_mm")
        size = " × ".join(f"{v:.1f}" for v in ext) + f" (max {max(ext):.1f})" if ext else \
            " × ".join(str(v) for v in l.get("extent_px", ())) + " px (spacing unknown)"
        amount = l.get("volume_ml") if three_d else l.get("area_mm2")
        amount_s = (f"{amount:.2f}" if three_d else f"{amount:.0f}") if amount is not None else "–"
        rows.append([l.get("id", k), loc, size, amount_s, _num(l.get("score"), 2)])
    return header, rows


def _lesions_in_plane(lesions: Sequence[dict[str, Any]], z: int) -> list[dict[str, Any]]:
    """2D views of 3D lesions on slice z (for outlines on a key-slice overlay)."""
    out = []
    for l in lesions:
        m = l.get("mask")
        if m is None or np.ndim(m) != 3 or z >= np.shape(m)[0]:
            continue
        plane = np.asarray(m[z]) != 0
        if not plane.any():
            continue
        rr, cc = np.nonzero(plane)
        d = {k: v for k, v in l.items() if k not in ("mask", "bbox_px", "volume_ml", "area_mm2")}
        d.update(mask=plane, bbox_px=((int(rr.min()), int(rr.max())), (int(cc.min()), int(cc.max()))))
        out.append(d)
    return out



def _save_png(fig: Any, path: Path) -> Path:
    """Write a figure as PNG atomically (no half-written file on error) and close it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", facecolor="white")
    finally:
        plt.close(fig)
    return path

def _save_plain(image2d: np.ndarray, path: Path, title: str, aspect: float = 1.0) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = np.asarray(image2d, dtype=np.float64)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    finite = a[np.isfinite(a)]
    lo, hi = (np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0))
    ax.imshow(a, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, aspect=aspect)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    return _save_png(fig, path)


def _slice_chart(scores: Sequence[float], threshold: float | None, key: Sequence[int], path: Path, unit: str,
                 positive: str | None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = np.asarray(scores, dtype=float)
    fig, ax = plt.subplots(figsize=(7, 2.6), dpi=100)
    ax.plot(np.arange(s.size), s, color="#345", lw=1.2, marker="." if s.size <= 60 else None)
    if threshold is not None:
        ax.axhline(float(threshold), color="#b00020", ls="--", lw=1, label=f"threshold {float(threshold):.2f}")
    for i, z in enumerate(key):
        if 0 <= z < s.size:
            ax.plot([z], [s[z]], "o", color="#ff8c00", ms=6, label="key " + unit if i == 0 else None)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"{unit} index")
    ax.set_ylabel(f"P({positive})" if positive else "probability")
    ax.grid(alpha=0.3)
    if threshold is not None or key:
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return _save_png(fig, path)


def _importance_chart(weights: Sequence[float], key: Sequence[int], path: Path) -> Path:
    """'Frame importance': the sequence model's weight of every input frame as stems (0 for frames it did not
    sample), key frames marked; no threshold line (weights are shares of the decision, not probabilities)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = np.asarray(weights, dtype=float)
    fig, ax = plt.subplots(figsize=(7, 2.6), dpi=100)
    frames = np.arange(w.size)
    ax.vlines(frames, 0, w, color="#345", lw=1.2 if w.size <= 120 else 0.6)
    if w.size <= 60:
        ax.plot(frames, w, ".", color="#345")
    for i, z in enumerate(key):
        if 0 <= z < w.size:
            ax.plot([z], [w[z]], "o", color="#ff8c00", ms=6, label="key frame" if i == 0 else None)
    top = float(w.max()) if w.size and np.isfinite(w).all() and w.max() > 0 else 1.0
    ax.set_ylim(0, top * 1.15)
    ax.set_xlim(-0.5, max(w.size - 0.5, 0.5))
    ax.set_title("Frame importance", fontsize=10)
    ax.set_xlabel("frame index")
    ax.set_ylabel("importance (weight)")
    ax.grid(alpha=0.3)
    if key:
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return _save_png(fig, path)


def _key_slices(study: dict[str, Any], n: int) -> list[int]:
    depth = int(np.shape(study["display"])[0])
    key = [int(z) for z in (study.get("key_slices") or []) if 0 <= int(z) < depth]
    ranking = study.get("frame_importance")
    if ranking is None:
        ranking = study.get("slice_scores")
    if not key and ranking is not None:
        key = [int(z) for z in np.argsort(-np.asarray(ranking, dtype=float), kind="stable")[:n]]
    if not key and study.get("heatmap") is not None:
        h = np.asarray(study["heatmap"], dtype=float).reshape(depth, -1).max(axis=1)
        key = [int(z) for z in np.argsort(-h, kind="stable")[:n]]
    if not key:
        key = [depth // 2]
    return sorted(dict.fromkeys(key[:n]))


def _images(study: dict[str, Any], out: Path, doc: Doc, n_key: int) -> list[Path]:
    """Write the key-image PNGs into out/ and add them to the document."""
    from meddx.explain.overlay import save_overlay, save_volume_overlay

    disp = np.asarray(study["display"], dtype=np.float32)  # no copy of a float32 display (long videos)
    heat = study.get("heatmap")
    lesions = list(study.get("lesions") or [])
    sp = study.get("spacing")
    image = study.get("image")
    is_seq = bool(getattr(image, "is_sequence", False))
    unit = "frame" if is_seq else "slice"
    written: list[Path] = []
    seg = study.get("kind") == "segmentation"
    labels = {"value_label": "lesion probability", "lesion_label": "segmented lesion"} if seg else {}
    importance = study.get("frame_importance")
    two_d = importance is None and (disp.ndim == 2 or (disp.ndim == 3 and disp.shape[-1] in (1, 3, 4)
                                                       and (heat is None or np.ndim(heat) == 2)))
    if two_d:
        path = out / "key_image.png"
        if heat is not None:
            save_overlay(disp, heat, path, lesions=[l for l in lesions if np.ndim(l.get("mask", np.zeros((1, 1)))) == 2],
                         title="Lesion probability (segmentation)" if seg else
                         f"Relevance heatmap for '{study.get('predicted')}'",
                         spacing=tuple(sp)[-2:] if sp else None, **labels)
            caption = ("Lesion probability overlay; cyan outlines = the segmented lesions." if seg else
                       "Heatmap overlay (warm colours drove the prediction); cyan outlines = candidate lesions.")
        else:
            _save_plain(disp, path, "Input as seen by the model")
            caption = "Input image (no heatmap was computed)."
        doc.img(path.name, caption)
        return [path]
    if disp.ndim != 3:
        raise InputError(f"display array must be 2D or 3D, got shape {disp.shape}", study.get("source", ""))
    key = _key_slices(study, n_key)
    aspect = float(sp[1]) / float(sp[2]) if sp and len(sp) == 3 else 1.0
    for z in key:
        path = out / f"key_{unit}_{z:03d}.png"
        if importance is not None:  # a sequence model: the frame as the model saw it, with its weight; no heatmap
            w = float(importance[z]) if z < len(importance) else 0.0
            label = f"frame {z} (importance {w:.3f})"
            _save_plain(disp[z], path, label, aspect)
            doc.img(path.name, f"Key {label}: the input frame (a sequence model weighs whole frames; no heatmap).")
            written.append(path)
            continue
        score = ""
        if study.get("slice_scores") is not None and z < len(study["slice_scores"]):
            score = f" (P={float(study['slice_scores'][z]):.2f})"
        if heat is not None:
            save_overlay(disp[z], np.asarray(heat)[z], path, lesions=_lesions_in_plane(lesions, z),
                         title=f"{unit} {z}{score}", spacing=(sp[1], sp[2]) if sp and len(sp) == 3 else None,
                         **labels)
        else:
            _save_plain(disp[z], path, f"{unit} {z}{score}", aspect)
        doc.img(path.name, f"Key {unit} {z}{score}: " + ("the input (no heatmap was computed)." if heat is None else
                                                          "lesion probability with the segmented lesions' outlines "
                                                          "(cyan)." if seg else
                                                          "heatmap overlay with candidate-lesion outlines (cyan)."))
        written.append(path)
    if heat is not None and not is_seq:
        path = out / "volume_overview.png"
        what = "lesion probability" if seg else "relevance"
        save_volume_overlay(disp, heat, path, lesions=lesions, spacing=sp, mode="orthogonal",
                            title=f"Orthogonal planes through the peak {what}", **labels)
        doc.img(path.name, f"Axial, coronal and sagittal planes through the strongest {what} (crosshair).")
        written.append(path)
    return written


def _lesion_section(doc: Doc, lesions: list[dict[str, Any]], seg: bool, is_seq: bool) -> None:
    """'Segmented lesions' / 'Candidate lesions': one table row per lesion, or a sentence saying there is none."""
    doc.h("Segmented lesions" if seg else "Candidate lesions")
    if lesions:
        header, rows = _lesion_rows(lesions, is_seq, score_name="Peak probability" if seg else "Peak relevance")
        doc.table(header, rows)
        doc.p("One row per connected component of the predicted mask; sizes are bounding-box extents along the "
              "array axes, areas and volumes are voxel counts times the voxel size." if seg else
              "Regions where the model's relevance heatmap is high; sizes are bounding-box extents along the "
              "array axes. They show where the model looked, not confirmed lesion boundaries.", "small")
    else:
        doc.p("No lesion was segmented." if seg else "No candidate lesion regions were found in the heatmap.")


def render_study_report(study: dict[str, Any], run_info: dict[str, Any], out_dir: str | Path,
                        include_phi: bool = False, n_key_images: int = 3, pdf_engine: str = "auto") -> dict[str, Any]:
    """Write out_dir/report.html, out_dir/report.pdf and the key-image PNGs for one study.

    Returns {"html", "pdf", "images": [...], "pdf_engine"}.
    """
    for key in ("display", "predicted", "probability"):
        if key not in study:
            raise InputError(f"study is missing '{key}'", study.get("source", ""))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image = study.get("image")
    is_seq = bool(getattr(image, "is_sequence", False))
    unit = "frame" if is_seq else "slice"
    positive = study.get("positive_class", run_info.get("positive_class"))
    threshold = study.get("threshold", run_info.get("threshold"))
    vm = run_info.get("val_metrics") or {}

    doc = Doc(title="meddx study report")
    doc.h("Diagnostic decision-support report", 1)
    if study.get("in_distribution") is False:
        doc.p(ood_statement(study), "ood")
    for note in (getattr(image, "metadata", None) or {}).get("series_integrity") or []:  # gaps, unreadable files
        doc.p(f"Incomplete series: {note}. Check the series before relying on this report.", "ood")
    doc.p(DISCLAIMER, "notice")
    doc.p(f"Generated {_dt.datetime.now().replace(microsecond=0).isoformat()} by meddx "
          f"{run_info.get('meddx_version', '')} with model '{run_info.get('model', '?')}'.", "small")

    doc.h("Study")
    doc.table(None, _header_rows(study, include_phi))
    if include_phi:
        phi = study.get("phi") or {}
        doc.p("Patient identifiers (shown because include_phi was requested):", "phi")
        doc.table(None, [[k, v] for k, v in phi.items()] or [["(none)", "no identifiers available"]])

    doc.h("Finding")
    withheld = bool(study.get("diagnosis_withheld"))
    if withheld:  # out of distribution without allow_ood: no decision, probabilities, heatmap or lesions
        doc.p(WITHHELD, "finding")
        names = list(study.get("class_names") or [])
        doc.h("Images")
        images = _images({**study, "heatmap": None, "lesions": [], "slice_scores": None, "key_slices": None,
                          "frame_importance": None}, out, doc, n_key_images)
    else:
        prob = float(study["probability"])
        doc.p(f"Predicted: {study['predicted']} (probability {prob:.3f})", "finding")
        p_pos = _positive_probability(study)
        seg = study.get("kind") == "segmentation"
        if seg:
            doc.p(_segmentation_finding(study, run_info))
            if study.get("note"):
                doc.p(str(study["note"]))
        if threshold is not None and p_pos is not None:
            if not seg:  # a segmenter's validation is Dice (model card), not sensitivity / specificity
                sens, spec = _run_sens_spec(run_info, positive)
                doc.p(f"Operating threshold for '{positive}': {float(threshold):.3f} (probability of '{positive}' "
                      f"here: {p_pos:.3f}). On validation at this threshold the model had sensitivity {_num(sens)} and "
                      f"specificity {_num(spec)}.")
        level, sentence = study_confidence(study, run_info)
        doc.p(sentence, level)
        if study.get("prediction_set") is not None:
            doc.p(prediction_set_statement(study.get("prediction_set"), study.get("coverage")))
        names = list(study.get("class_names") or [])
        probs_all = list(study.get("probs") or [])
        if names and len(names) == len(probs_all):
            doc.table(["Class", "Probability"], [[n, f"{float(p):.3f}"] for n, p in zip(names, probs_all)])

        doc.h("Key images")
        images = _images(study, out, doc, n_key_images)

        scores = study.get("slice_scores")
        importance = study.get("frame_importance")
        if importance is not None:
            doc.h("Frame importance")
            key = _key_slices(study, n_key_images)
            chart = _importance_chart(importance, key, out / "frame_importance.png")
            images.append(chart)
            top = ", ".join(f"{z} ({float(importance[z]):.3f})" for z in key if z < len(importance))
            doc.p(f"The sequence model's weight of each input frame in its decision (the weights of the frames it read "
                  f"sum to 1; frames it did not sample have 0); key frames: {top}. A sequence model weighs whole "
                  f"frames: no heatmap or candidate lesion regions are computed.")
            doc.img(chart.name, "Frame importance: weight per input frame (orange dots: key frames).")
        elif scores is not None and len(scores) > 1:
            doc.h(f"Peak lesion probability per {unit}" if seg else f"{unit.capitalize()}s that drove the decision")
            key = _key_slices(study, n_key_images)
            chart = _slice_chart(scores, threshold, key, out / f"{unit}_probabilities.png", unit, positive)
            images.append(chart)
            top = ", ".join(f"{z} (P={float(scores[z]):.2f})" for z in key if z < len(scores))
            doc.p(f"Per-{unit} probability of '{positive or study['predicted']}'; key {unit}s: {top}.")
            doc.img(chart.name, f"Per-{unit} probability (dashed line: operating threshold).")

        extent = study.get("lesion_extent")
        if extent:  # a slice labeller: which slices hold the lesion, and how far it reaches along the stack
            doc.h("Lesion extent along the stack")
            doc.p(extent.get("sentence", ""))
            doc.table(None, [list(r) for r in extent.get("rows") or []])
        elif importance is None:  # a sequence model gives frame importance (above), not lesion regions
            _lesion_section(doc, list(study.get("lesions") or []), seg, is_seq)

    doc.h("Model card")
    data = run_info.get("data") or {}
    ci = vm.get("auc_ci") or [None, None]
    card = [["Model", run_info.get("model", "?")], ["meddx version", run_info.get("meddx_version", "?")],
            ["Task", run_info.get("task", "?")], ["Classes", ", ".join(run_info.get("class_names") or names)],
            ["Training data", data.get("source", "?")], ["Training date", _fmt_date(run_info.get("created", "?"))],
            ["Validation Dice (lesion cases)", f"{_num(vm.get('dice'))} ({_num(vm.get('dice_lesion'))})"
             if vm.get("dice") is not None else "none: no validation patients (the schedule's last epoch is kept)"]
            if run_info.get("kind") == "segmenter" else
            ["Validation AUC (95% CI)", f"{_num(vm.get('auc'))} ({_num(ci[0])}–{_num(ci[1])})"],
            ["Validation cases", vm.get("n", "?")]]
    if vm.get("warnings"):
        card.append(["Validation caveats", "; ".join(str(w) for w in vm["warnings"])])
    summary = data.get("summary")
    if isinstance(summary, dict) and summary:
        card.append(["Data summary", "; ".join(f"{k}: {v}" for k, v in summary.items())])
    doc.table(None, card)

    doc.h("Use of this report")
    doc.p(DISCLAIMER, "notice")

    html_path = write_html(doc, out / "report.html")
    engine = write_pdf(doc, html_path, out / "report.pdf", engine=pdf_engine)
    return {"html": html_path, "pdf": out / "report.pdf", "images": images, "pdf_engine": engine}


def render_batch(studies: Sequence[dict[str, Any]], run_info: dict[str, Any], out_dir: str | Path,
                 include_phi: bool = False, pdf_engine: str = "auto") -> dict[str, Any]:
    """One report per study in out_dir/study_001, study_002, ... (never named after patients) and
    out_dir/index.html linking them. Returns {"index": path, "reports": [paths dicts]}."""
    import html as _html

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reports, rows = [], []
    for i, study in enumerate(studies, start=1):
        name = f"study_{i:03d}"
        paths = render_study_report(study, run_info, out / name, include_phi=include_phi, pdf_engine=pdf_engine)
        reports.append(paths)
        level = "out of distribution: no diagnosis" if study.get("diagnosis_withheld") else \
            study_confidence(study, run_info)[0]
        rows.append((name, "(withheld)" if study.get("diagnosis_withheld") else study["predicted"],
                     "" if study.get("diagnosis_withheld") else f"{float(study['probability']):.3f}", level,
                     study.get("source", "") if include_phi else ""))
    e = _html.escape
    body = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>meddx reports</title>',
            "<style>body{font-family:DejaVu Sans,Arial,sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #bbb;padding:.3em .7em}th{background:#eef2f6}</style></head><body>",
            "<h1>meddx study reports</h1>", f"<p><b>{e(DISCLAIMER)}</b></p>",
            f"<p>Model '{e(str(run_info.get('model', '?')))}', {len(rows)} studies.</p>",
            "<table><tr><th>Study</th><th>Predicted</th><th>Probability</th><th>Confidence</th><th>PDF</th>"
            + ("<th>Source</th>" if include_phi else "") + "</tr>"]
    for name, pred, prob, level, src in rows:
        body.append(f'<tr><td><a href="{name}/report.html">{name}</a></td><td>{e(str(pred))}</td>'
                    f'<td>{prob}</td><td>{e(level)}</td><td><a href="{name}/report.pdf">PDF</a></td>'
                    + (f"<td>{e(str(src))}</td>" if include_phi else "") + "</tr>")
    body.append("</table></body></html>")
    index = atomic_write_text(out / "index.html", "\n".join(body) + "\n")
    return {"index": index, "reports": reports}
