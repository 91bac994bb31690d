"""`meddx evaluate/predict/report` give the numbers recorded before the inference-layer redesign.

The RUN fixtures in tests/fixtures/runs/ were trained and `reference.json` recorded with the code before the
redesign (see reference.py); the inputs are regenerated (seeded synthetic slices) or read from ../shared/data.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("meddx_regression_reference", HERE / "reference.py")
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)  # type: ignore[union-attr]


def _close(a, b, path: str) -> None:
    if isinstance(a, dict):
        # figures added since the recording (new metrics.json keys) are allowed; every recorded one must remain
        assert set(b) <= set(a), f"{path}: recorded keys {sorted(set(b) - set(a))} are gone"
        for k in b:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), f"{path}: {len(a)} != {len(b)} entries"
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, (int, float)) and not isinstance(a, bool) or _is_number(a):
        fa, fb = float(a), float(b)
        assert abs(fa - fb) <= 1e-4 + 1e-4 * abs(fb) + _one_case(path), f"{path}: {a} != recorded {b}"
    else:
        assert a == b, f"{path}: {a!r} != recorded {b!r}"


# Accuracy at a RUN's operating threshold on the split that chose it: the threshold (Youden's cut) is one validation
# case's probability, so a ~1e-7 difference between CPU kernels (AVX-512 on the box that recorded, AVX2 elsewhere)
# moves that one case across it (measured: breast_cls, 78 cases, the case 4.5e-7 under the threshold). One case,
# no more, is allowed there; every other figure keeps the 1e-4 tolerance.
ONE_CASE_AT_THRESHOLD = {"breast_cls/evaluate.accuracy": 78}


def _one_case(path: str) -> float:
    return 1.0 / ONE_CASE_AT_THRESHOLD[path] + 1e-9 if path in ONE_CASE_AT_THRESHOLD else 0.0


def _is_number(v) -> bool:
    try:
        float(v)
        return isinstance(v, str) and v.strip() != ""
    except (TypeError, ValueError):
        return False


@pytest.mark.slow
def test_cli_outputs_match_the_recorded_reference(tmp_path: Path) -> None:
    recorded = json.loads(ref.REFERENCE.read_text())
    data = ref.make_data(tmp_path / "data")
    now = ref.measure(ref.RUNS, data, tmp_path / "measure")
    missing = sorted(set(recorded) - set(now))
    if missing and not ref.SHARED.is_dir():
        pytest.skip(f"../shared/data absent: cannot re-measure {', '.join(missing)}")
    assert not missing, f"not measured: {missing}"
    for key in recorded:
        _close(now[key], recorded[key], key)
