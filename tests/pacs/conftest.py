"""Fixtures for the PACS tests: the real CT series (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest


CT = "dicom/ct_abdomen_ircadb"


@pytest.fixture(scope="session")
def ct_dir(shared_data) -> Path:
    p = shared_data / CT
    if not p.is_dir():
        pytest.skip(f"real data {p} is absent")
    return p
