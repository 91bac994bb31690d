"""Reports of sequence-classifier studies: a "Frame importance" chart and key frames with their weights (no heatmap,
no threshold line, no lesion table), HTML and PDF; image-classifier reports keep their per-slice chart and overlays."""

from __future__ import annotations

import re

import numpy as np

from meddx.infer.prediction import Prediction
from meddx.io.image import Image
from meddx.report import render_study_report

from .conftest import gaussian_blob, run_info


def _sequence_study(n_frames: int = 12) -> dict:
    """A video-like study as `SequenceClassifier.predict` returns it: 12 frames, 6 of them sampled."""
    rng = np.random.default_rng(0)
    frames = (60 + 20 * rng.standard_normal((n_frames, 40, 48))).clip(0, 255).astype(np.uint8)
    image = Image(frames, spatial_ndim=2, is_sequence=True, source="clip.mp4")
    importance = np.zeros(n_frames)
    importance[::2] = [0.05, 0.1, 0.4, 0.25, 0.12, 0.08]  # frames 0, 2, ..., 10: weights sum to 1
    key = [int(k) for k in np.argsort(-importance, kind="stable")[:3]]  # 4, 6, 8
    pred = Prediction(probabilities={"absent": 0.2, "present": 0.8}, label="present", probability=0.8,
                      threshold=0.45, image=image, display=frames.astype(np.float32) / 255.0,
                      kind="sequence_classifier", positive_class="present", frame_importance=importance,
                      key_slices=key, slice_scores=[float(v) for v in importance])
    return pred.to_study("clip.mp4")


def _images(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', html)


def test_sequence_report_shows_frame_importance_and_key_frames(tmp_path) -> None:
    study = _sequence_study()
    assert study["frame_importance"][4] == 0.4 and study.get("heatmap") is None
    info = dict(run_info("present", 0.45), model="lstm", class_names=["absent", "present"])
    out = tmp_path / "rep"
    paths = render_study_report(study, info, out, pdf_engine="reportlab")
    html = paths["html"].read_text()
    # the decision and the per-class probabilities table
    assert "Predicted: present (probability 0.800)" in html
    assert "<tr><td>absent</td><td>0.200</td></tr>" in html and "<tr><td>present</td><td>0.800</td></tr>" in html
    # the frame-importance chart instead of the per-slice / per-frame P(positive) chart
    assert "<h2>Frame importance</h2>" in html
    assert "Frame importance: weight per input frame" in html
    assert "frame_importance.png" in _images(html)
    assert "probabilities.png" not in html and "dashed line: operating threshold" not in html
    assert "Per-frame probability" not in html
    # key frames as plain images captioned with their weights; no heatmap anywhere
    for z, w in ((4, 0.4), (6, 0.25), (8, 0.12)):
        assert f"frame {z} (importance {w:.3f})" in html
        assert f"key_frame_{z:03d}.png" in _images(html)
    assert "heatmap overlay" not in html.lower() and "Candidate lesions" not in html
    for src in _images(html):
        assert (out / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", src
    assert paths["pdf"].read_bytes()[:5] == b"%PDF-" and paths["pdf_engine"] == "reportlab"
    assert not list(out.glob(".*")), "temporary files left behind"


def test_frame_importance_chart_has_no_threshold_line(tmp_path, monkeypatch) -> None:
    """The chart's title, key-frame markers and no horizontal line (weights are not probabilities)."""
    from meddx.report import study as study_mod

    seen = {}
    real = study_mod._save_png

    def keep(fig, path):
        ax = fig.axes[0]
        flat = [ln for ln in ax.get_lines() if len(ln.get_ydata()) == 2 and len(set(ln.get_ydata())) == 1]
        seen.update(title=ax.get_title(), ylabel=ax.get_ylabel(), flat=flat,
                    labels=[t.get_text() for t in ax.get_legend().get_texts()])
        return real(fig, path)

    monkeypatch.setattr(study_mod, "_save_png", keep)
    study_mod._importance_chart([0.0, 0.2, 0.0, 0.5, 0.3], [3, 4], tmp_path / "c.png")
    assert seen["title"] == "Frame importance" and "importance" in seen["ylabel"]
    assert seen["labels"] == ["key frame"] and not seen["flat"]
    assert (tmp_path / "c.png").is_file()
    # control: the per-slice probability chart does draw its threshold line, which the check above would see
    study_mod._slice_chart([0.2, 0.6, 0.4], 0.5, [1], tmp_path / "s.png", "slice", "lesion")
    assert seen["flat"] and "threshold 0.50" in seen["labels"]


def test_image_classifier_stack_report_is_unchanged(tmp_path) -> None:
    """A classifier's slice stack (no frame importance): per-slice P(positive) chart with the threshold, heatmap
    overlays on the key slices, the candidate-lesion section."""
    from meddx.explain import heatmap_to_lesions

    vol = np.random.default_rng(1).normal(0, 1, (10, 32, 32)).astype(np.float32)
    image = Image(vol, spatial_ndim=3, source="vol.nii.gz")
    heat = gaussian_blob(vol.shape, (5, 16, 16), (1.5, 4, 4)).astype(np.float32)
    scores = [0.1, 0.1, 0.2, 0.4, 0.7, 0.9, 0.6, 0.3, 0.1, 0.1]
    pred = Prediction(probabilities={"normal": 0.1, "lesion": 0.9}, label="lesion", probability=0.9, threshold=0.42,
                      image=image, display=(vol - vol.min()) / np.ptp(vol), positive_class="lesion", heatmap=heat,
                      lesions=heatmap_to_lesions(heat, 0.5, spacing=image.spacing), slice_scores=scores,
                      key_slices=[5, 4, 6])
    study = pred.to_study("vol.nii.gz")
    assert "frame_importance" not in study
    paths = render_study_report(study, run_info(), tmp_path / "r", pdf_engine="reportlab")
    html = paths["html"].read_text()
    assert "Frame importance" not in html and "importance" not in html
    assert "<h2>Slices that drove the decision</h2>" in html
    assert "Per-slice probability (dashed line: operating threshold)." in html
    assert "slice_probabilities.png" in _images(html)
    assert "Key slice 5 (P=0.90): heatmap overlay with candidate-lesion outlines (cyan)." in html
    assert "<h2>Candidate lesions</h2>" in html
    assert paths["pdf"].read_bytes()[:5] == b"%PDF-"
