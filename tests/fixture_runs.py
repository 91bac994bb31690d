"""The fixture RUNs' derived files, made on first use instead of kept in git.

`tests/fixtures/runs/demo_cls/ood.npz` (the OOD gate's and calibration's arrays) is a function of the tracked
`model.keras` + `run.json` and the seeded synthetic demo data, so it is refitted here (~12 s, bit-identical on the
machine that recorded it) rather than committed; `.gitignore` keeps it out of the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from meddx.train.fingerprint import FINGERPRINT_KEY, OOD_FILE

RUNS = Path(__file__).resolve().parent / "fixtures" / "runs"
DEMO_CLS = RUNS / "demo_cls"


def _fresh(run: Path) -> bool:
    """True when the RUN's ood.npz exists and is newer than the model and run.json it was fitted for."""
    ood = run / OOD_FILE
    if not ood.is_file():
        return False
    return all(ood.stat().st_mtime >= (run / f).stat().st_mtime for f in ("model.keras", "run.json"))


def ensure_demo_ood(run: Path = DEMO_CLS) -> Path:
    """Fit `run`'s ood.npz from the seeded demo data unless a fresh one is there; returns its path. Fails when the
    refit's fingerprint differs from the one run.json records (the npz would then not belong to that RUN)."""
    target = run / OOD_FILE
    if _fresh(run):  # the usual case: nothing to import or fit
        return target
    from meddx.data.synthetic import write_synthetic_folder
    from meddx.train.fingerprint import add_fingerprint

    recorded = json.loads((run / "run.json").read_text())
    with tempfile.TemporaryDirectory(prefix="meddx-fixture-ood-") as work:
        copy = Path(work) / "run"
        copy.mkdir()
        for name in ("model.keras", "run.json"):
            shutil.copy(run / name, copy / name)
        data = write_synthetic_folder(Path(work) / "demo", n=240, size=64, seed=0)  # as reference.py trained it
        refit = add_fingerprint(copy, data)
        same = ("metadata", "n_fit", "n_val", "feature_dim")  # the data and splits; not float-exact numbers
        if any(refit[FINGERPRINT_KEY].get(k) != recorded.get(FINGERPRINT_KEY, {}).get(k) for k in same):
            raise RuntimeError(f"{run}: the refitted fingerprint differs from run.json's; retrain the fixture "
                               "(python tests/regression/reference.py --train)")
        staged = run / f".{OOD_FILE}.{os.getpid()}.tmp"
        shutil.copy(copy / OOD_FILE, staged)
        os.replace(staged, target)  # atomic: parallel sessions write the same bytes
    return target
