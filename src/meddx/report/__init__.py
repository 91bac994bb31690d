"""meddx.report: per-study diagnostic reports (HTML + PDF), batch reports, the model evaluation
report, and DICOM SEG / SR / Secondary Capture outputs. Importing is cheap (highdicom,
matplotlib and reportlab load inside the functions that use them)."""

from __future__ import annotations

from meddx.report.dicom_out import (
    load_source_datasets,
    read_png_rgb,
    write_dicom_seg,
    write_dicom_sr,
    write_secondary_capture,
)
from meddx.report.evaluation import render_evaluation_report
from meddx.report.study import DISCLAIMER, confidence_statement, render_batch, render_study_report

__all__ = [
    "DISCLAIMER", "confidence_statement", "load_source_datasets", "read_png_rgb", "render_batch",
    "render_evaluation_report", "render_study_report", "write_dicom_seg",
    "write_dicom_sr", "write_secondary_capture",
]
