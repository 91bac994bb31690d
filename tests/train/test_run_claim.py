"""The RUN folder is decided before DATA is read and claimed only after it passed (`check_run_dir` /
`claim_run_dir`): bad data never removes a finished run, even with --overwrite, nor leaves a half-made folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meddx.errors import ConfigError
from meddx.train.fit import RESUME_FILE, check_run_dir, claim_run_dir
from tests.files import write_manifest, write_png


def _finished_run(run: Path) -> dict[str, bytes]:
    """A RUN folder that looks finished (what check_run_dir looks at), with the bytes to compare later."""
    run.mkdir(parents=True)
    files = {"run.json": json.dumps({"kind": "classifier", "old": True}).encode(), "model.keras": b"old model",
             "history.csv": b"epoch,loss\n0,1.0\n"}
    for name, data in files.items():
        (run / name).write_bytes(data)
    return files


def _truncate(path: Path) -> None:
    """Keep the PNG header (size, mode still read) and cut the pixel data: only decoding fails."""
    path.write_bytes(path.read_bytes()[:80])


def _split(i: int) -> str:
    return "train" if i < 10 else ("val" if i < 13 else "test")


def _segmentation_manifest(tmp_path: Path) -> Path:
    """12 image/mask pairs with given splits; img5 (a training image) cannot be decoded."""
    rows = [{"path": str(write_png(tmp_path / f"img{i}.png", i, size=32)),
             "mask": str(write_png(tmp_path / f"img{i}_mask.png", i, size=32, mask=True)), "split": _split(i)} for i in range(16)]
    _truncate(tmp_path / "img5.png")
    return write_manifest(tmp_path / "seg.csv", rows)


def _one_error(code: int, err: str, needle: str) -> None:
    errors = [ln for ln in err.splitlines() if ln.startswith("meddx: error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert needle in errors[0], errors


def test_check_writes_nothing_and_claim_carries_it_out(tmp_path: Path) -> None:
    run = tmp_path / "RUN"
    before = _finished_run(run)
    with pytest.raises(ConfigError, match="already holds a trained model"):
        check_run_dir(run, overwrite=False, settings={"seed": 0})
    claim = check_run_dir(run, overwrite=True, settings={"seed": 0, "threads": 2})
    assert claim.clear and not claim.resuming
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # deciding removed nothing
    assert claim_run_dir(claim) is False
    assert not (run / "run.json").exists() and not (run / "model.keras").exists()
    assert json.loads((run / RESUME_FILE).read_text()) == {"seed": 0}  # threads may change on resume


def test_check_of_a_new_folder_does_not_make_it(tmp_path: Path) -> None:
    claim = check_run_dir(tmp_path / "new" / "RUN", overwrite=False, settings={"seed": 1})
    assert not (tmp_path / "new").exists()
    claim_run_dir(claim)
    assert json.loads((tmp_path / "new" / "RUN" / RESUME_FILE).read_text()) == {"seed": 1}


def test_classifier_overwrite_with_undecodable_image_keeps_the_finished_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from meddx.cli import main

    rows = [{"path": str(write_png(tmp_path / f"i{i}.png", i, size=32)), "label": "ab"[i % 2], "split": _split(i)}
            for i in range(16)]
    _truncate(tmp_path / "i7.png")  # a training case: training reads it
    run = tmp_path / "RUN"
    before = _finished_run(run)
    code = main(["train", str(write_manifest(tmp_path / "m.csv", rows)), "--epochs", "1", "--out", str(run),
                 "--overwrite"])
    _one_error(code, capsys.readouterr().err, "i7.png")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_segmenter_overwrite_with_undecodable_image_keeps_the_finished_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from meddx.cli import main

    manifest = _segmentation_manifest(tmp_path)
    run = tmp_path / "RUN"
    before = _finished_run(run)
    code = main(["train", str(manifest), "--task", "segmentation", "--epochs", "1", "--out", str(run),
                 "--overwrite"])
    _one_error(code, capsys.readouterr().err, "img5.png")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_segmenter_on_bad_data_makes_no_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from meddx.cli import main

    manifest = _segmentation_manifest(tmp_path)
    code = main(["train", str(manifest), "--task", "segmentation", "--epochs", "1", "--out", str(tmp_path / "RUN")])
    _one_error(code, capsys.readouterr().err, "img5.png")
    assert not (tmp_path / "RUN").exists()


@pytest.mark.parametrize("out", ["afile", "afile/RUN"])
def test_out_naming_a_file_is_refused_before_data_is_read(tmp_path: Path, out: str) -> None:
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"afile: is a file, not a folder"):
        check_run_dir(tmp_path / out, overwrite=True, settings={"seed": 0})
    assert (tmp_path / "afile").read_text() == "not a folder"
