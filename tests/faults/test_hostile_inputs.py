"""Hostile-input harness: every bad input, broken RUN, unusable output folder or resource failure gives exactly one
`meddx: error: <file>: <problem>` line on stderr, exit 2, and no partial output (cases in hostile_cases.py)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

from tests.faults.hostile_cases import CASES, classify, files_under


def _patch(monkeypatch: pytest.MonkeyPatch, dotted: str, replacement: object) -> None:
    module, attr = dotted.rsplit(".", 1)
    monkeypatch.setattr(importlib.import_module(module), attr, replacement)


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input_fails_cleanly(name: str, tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from meddx.cli import main

    case = CASES[name](tmp_path)
    before = files_under(case.out)
    capfd.readouterr()
    exc: BaseException | None = None
    rc = None
    with monkeypatch.context() as mp:
        for dotted, repl in case.patches:
            _patch(mp, dotted, repl)
        try:
            rc = main(case.argv)
        except SystemExit as e:  # argparse
            rc = e.code
        except Exception as e:  # noqa: BLE001 -- a traceback the user would have seen
            exc = e
    err = capfd.readouterr().err
    kind, detail = classify(case, rc, err, before, exc)
    if os.environ.get("MEDDX_HOSTILE_TALLY"):  # tally for the issue note: one line per case
        with open(os.environ["MEDDX_HOSTILE_TALLY"], "a", encoding="utf-8") as fh:
            fh.write(f"{name}\t{kind}\t{' '.join(detail.split())[:200]}\n")
    assert kind == "clean", f"{kind.upper()}: {detail}"
