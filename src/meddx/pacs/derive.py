"""The DICOM objects a prediction sends back to the PACS: SEG (masks), TID 1500 SR, Encapsulated PDF report.

All are derived from the source series (same study, patient and study modules copied from it, as a derived
object must carry them), in new series; the PDF is rendered without identifiers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class Model:
    """A RUN loaded once: its name and version (what idempotency and the SR record), predictor and card."""

    name: str
    version: str
    predictor: Any
    run_dir: Path

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    def sr_description(self, series_uid: str) -> str:
        """SeriesDescription of this model's SR of one source series (name, version, a hash of the series UID):
        how a series already processed by this model is recognised in Orthanc."""
        from meddx.pacs.state import study_key

        return f"meddx SR {self.name[:24]} {self.version[:20]} {study_key(series_uid)[:8]}"

    def report_info(self) -> dict[str, Any]:
        info = self.predictor.info.to_dict()
        if self.predictor.kind == "segmenter":
            info["task"] = "segmentation"
        return info


def model_version(run_dir: Path) -> str:
    """`<meddx version of the RUN>-<12 hex of run.json's SHA-256>`: changes whenever the RUN is retrained."""
    import hashlib
    import json

    raw = (run_dir / "run.json").read_bytes()
    try:
        mv = str(json.loads(raw).get("meddx_version") or "0")
    except ValueError:
        mv = "0"
    return f"{mv}-{hashlib.sha256(raw).hexdigest()[:12]}"


def load_model(run: str | Path) -> Model:
    """Load a RUN once for the watcher."""
    from meddx.infer import load

    run_dir = Path(run).resolve()
    predictor = load(run_dir)
    return Model(name=run_dir.name, version=model_version(run_dir), predictor=predictor, run_dir=run_dir)


def in_distribution(prediction: Any) -> bool:
    """False only when the RUN's OOD gate said the input is out of its training distribution."""
    return getattr(prediction, "in_distribution", None) is not False


def _lesion_mask(prediction: Any, image: Any, heatmap_seg: bool) -> tuple[np.ndarray | None, str]:
    """The mask to store as a SEG and its label: a segmenter's mask, or a classifier's heatmap candidates."""
    shape = tuple(image.spatial_shape) if image.spatial_ndim == 3 else (1, *image.spatial_shape)
    if prediction.kind == "segmenter" and prediction.mask is not None:
        m = np.asarray(prediction.mask) != 0
        return m.reshape(shape), str(prediction.positive_class or "Lesion")
    if heatmap_seg and prediction.lesions:
        from meddx.infer.classifier import full_size_mask

        m = np.zeros(shape, dtype=bool)
        for les in prediction.lesions:
            if "mask" in les:
                m |= full_size_mask(les, image.spatial_shape).reshape(shape)
        return m, "Lesion candidate (heatmap)"
    return None, ""


def derived_objects(model: Model, prediction: Any, sources: Any, out: Path,
                    heatmap_seg: bool = False) -> dict[str, Path]:
    """Write seg.dcm (when there is a mask), pdf.dcm and sr.dcm for one series into `out`; their paths.

    `sources`: the series' folder or its pydicom Datasets (headers are enough). The SR states the finding, its
    probability, the algorithm and per-lesion sizes; for an input out of the model's distribution it says
    "out of distribution, no diagnosis" and no SEG is written."""
    from meddx.report import load_source_datasets, render_study_report, write_dicom_seg, write_dicom_sr
    from meddx.report.dicom_out import write_encapsulated_pdf

    image = prediction.image
    datasets = load_source_datasets(image, sources)  # headers in slice order, read once
    ok = in_distribution(prediction)
    paths: dict[str, Path] = {}
    if ok:
        mask, label = _lesion_mask(prediction, image, heatmap_seg)
        if mask is not None and mask.any():
            paths["seg"] = write_dicom_seg(image, mask, datasets, out / "seg.dcm", label=label)
    study = prediction.to_study("PACS series")
    study["diagnosis_withheld"] = not ok  # the PDF, like the SR, gives no diagnosis out of distribution
    report = render_study_report(study, model.report_info(), out / "report", include_phi=False)
    paths["report_pdf"] = Path(report["pdf"])
    paths["report_html"] = Path(report["html"])
    paths["pdf"] = write_encapsulated_pdf(report["pdf"], datasets[0], out / "pdf.dcm",
                                          title=f"meddx report ({model.name})",
                                          series_description=f"meddx PDF {model.name[:40]}")
    finding = {"predicted": prediction.label, "probability": prediction.probability,
               "threshold": prediction.threshold, "model": model.name, "version": model.version,
               "positive_class": prediction.positive_class, "in_distribution": ok}
    lesions = [les for les in (prediction.lesions or []) if ok]
    series_uid = str(image.metadata["dicom_refs"]["SeriesInstanceUID"])
    paths["sr"] = write_dicom_sr(image, finding, lesions, datasets, out / "sr.dcm",
                                 series_description=model.sr_description(series_uid))
    return paths
