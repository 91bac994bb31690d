"""Orchestration of one command each (was `meddx/workflows.py`): load, infer, evaluate, report, write files
atomically. `cli.py` parses and calls these; `meddx.app.api` is the same work for Python users."""

from __future__ import annotations

from meddx.app.demo import DEMO_MODEL, FINE_CAM_MODEL, run_demo
from meddx.app.evaluate import evaluate_run
from meddx.app.predict import predict_inputs
from meddx.app.report import report_studies

__all__ = ["DEMO_MODEL", "FINE_CAM_MODEL", "evaluate_run", "predict_inputs", "report_studies", "run_demo"]
