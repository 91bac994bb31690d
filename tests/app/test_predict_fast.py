"""Batch prediction: bounded read-ahead, grouped batches, streamed rows (same text as write_csv), manifests."""

from __future__ import annotations

import csv
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from meddx.app.common import CsvStream, write_csv
from meddx.app.manifest import Study, collect_studies, read_manifest
from meddx.errors import InputError, MeddxError

REPO = Path(__file__).resolve().parents[2]
BREAST = REPO / "tests" / "fixtures" / "runs" / "breast_cls"


def _pngs(folder: Path, n: int, size: int = 28) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        f = folder / f"img_{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(f)
        files.append(f)
    return files


def _read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_csv_stream_writes_what_write_csv_writes(tmp_path: Path) -> None:
    rows = [{"input": "a", "p": 0.5}, {"input": "b", "p": None, "error": "bad, file"}, {"input": "c", "p": 1}]
    write_csv(tmp_path / "ref.csv", rows)
    with CsvStream(tmp_path / "s.csv") as s:
        for r in rows:
            s.write(r)
    assert (tmp_path / "s.csv").read_text() == (tmp_path / "ref.csv").read_text()
    assert s.count == 3 and s.columns == ["input", "p", "error"]
    with CsvStream(tmp_path / "empty.csv", empty_header=["input", "id"]):
        pass
    assert (tmp_path / "empty.csv").read_text().strip() == "input,id"


def test_csv_stream_leaves_nothing_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with CsvStream(tmp_path / "p.csv") as s:
            s.write({"input": "a"})
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_manifest_paths_resolve_against_its_folder(tmp_path: Path) -> None:
    files = _pngs(tmp_path / "imgs", 2)
    m = tmp_path / "studies.csv"
    m.write_text(f"path,study_id\nimgs/{files[0].name},case-a\n{files[1]},\n")
    assert read_manifest(m) == [(tmp_path / "imgs" / files[0].name, "case-a"), (files[1], None)]
    studies = collect_studies([files[1]], m)
    assert [s.index for s in studies] == [0, 1, 2]
    assert [s.name for s in studies] == [str(files[1]), "case-a", str(files[1])]


@pytest.mark.parametrize("text, problem", [("file\nx.png\n", "`path` column"), ("path\n", "no studies"),
                                           ("path,study_id\na.png,x\nb.png,x\n", "appears twice"),
                                           ("path\na.png\n\n,\n", "line 4: empty path")])
def test_bad_manifests_are_one_line_errors(tmp_path: Path, text: str, problem: str) -> None:
    m = tmp_path / "m.csv"
    m.write_text(text)
    with pytest.raises(InputError, match=problem):
        read_manifest(m)


def test_read_ahead_keeps_order_and_bounds_what_is_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    from meddx.app import predict

    lock = threading.Lock()
    state = {"read": 0, "consumed": 0, "most": 0}

    def fake_read(study: Study, sequences: bool = False) -> object:
        time.sleep(0.001 * (study.index % 3))  # out-of-order completion
        with lock:
            state["read"] += 1
            state["most"] = max(state["most"], state["read"] - state["consumed"])
        if study.index == 7:
            raise InputError("unreadable", study.path)
        return study.index

    monkeypatch.setattr(predict, "read_study", fake_read)
    studies = [Study(i, Path(f"s{i}.png")) for i in range(40)]
    seen = []
    for study, image, error in predict.read_ahead(studies, workers=2, ahead=5):
        with lock:
            state["consumed"] += 1
        seen.append(study.index)
        assert (error is not None) == (study.index == 7)
        assert error is not None or image == study.index
    assert seen == list(range(40))
    assert state["most"] <= 5


def test_batch_prediction_matches_one_image_at_a_time(tmp_path: Path) -> None:
    """70 PNGs (three groups of 32) through predict_inputs: same labels and probabilities (within float noise
    of batching) as predicting each image alone, rows in input order, nothing buffered as a list."""
    from meddx.app import predict_inputs
    from meddx.infer import load
    from meddx.io import read_image

    files = _pngs(tmp_path / "imgs", 70)
    out = predict_inputs(BREAST, [tmp_path / "imgs"], tmp_path / "pred", log=lambda s: None)
    rows = _read_rows(out)
    assert [r["input"] for r in rows] == [f"study_{i + 1:03d}" for i in range(70)]  # no file names by default
    p = load(BREAST, heatmaps=False)
    for f, r in zip(files[::9], rows[::9]):
        pred = p.predict(read_image(f))
        assert r["predicted"] == pred.label
        assert float(r["probability"]) == pytest.approx(pred.probability, abs=1e-5)
    assert not (tmp_path / "pred" / "lesions.csv").exists()


def test_manifest_study_ids_name_rows_and_outputs(tmp_path: Path) -> None:
    from meddx.app import predict_inputs

    files = _pngs(tmp_path / "imgs", 3)
    m = tmp_path / "studies.csv"
    m.write_text("path,study_id\n" + "".join(f"imgs/{f.name},case{i}\n" for i, f in enumerate(files)))
    out = predict_inputs(BREAST, [], tmp_path / "pred", manifest=str(m), heatmaps=True, log=lambda s: None)
    rows = _read_rows(out)
    assert [r["input"] for r in rows] == ["case0", "case1", "case2"]
    assert sorted(p.name for p in (tmp_path / "pred" / "heatmaps").glob("*_overlay.png")) == \
        ["001_case0_overlay.png", "002_case1_overlay.png", "003_case2_overlay.png"]
    assert (tmp_path / "pred" / "lesions.csv").exists()


def test_error_rows_instead_of_a_lost_job(tmp_path: Path) -> None:
    """study_rows(errors="row"): a missing and a corrupt study become error rows; the others are predicted."""
    from meddx.app.predict import study_rows
    from meddx.infer import load

    files = _pngs(tmp_path / "imgs", 3)
    bad = tmp_path / "imgs" / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    studies = [Study(0, files[0]), Study(1, bad), Study(2, tmp_path / "absent.png"), Study(3, files[1])]
    p = load(BREAST)
    got = list(study_rows(p, studies, tmp_path / "o", errors="row"))
    assert [s.index for s, _, _ in got] == [0, 1, 2, 3]
    assert [bool(r.get("error")) for _, r, _ in got] == [False, True, True, False]
    assert "no such file" in got[2][1]["error"] and str(tmp_path) not in got[2][1]["error"]
    with pytest.raises(MeddxError, match="bad.png"):
        list(study_rows(p, studies, tmp_path / "o"))


def test_batched_heatmaps_match_one_at_a_time(tmp_path: Path) -> None:
    """Grad-CAM computed once per batch gives the heatmaps (and lesions) of one image at a time."""
    from meddx.infer import load
    from meddx.io import read_image

    images = [read_image(f) for f in _pngs(tmp_path, 3, size=64)]
    p = load(REPO / "tests" / "fixtures" / "runs" / "demo_cls")
    batch = p.predict_batch(images, heatmap=True)
    for img, b in zip(images, batch):
        one = p.predict(img, heatmap=True)
        assert b.heatmap is not None and b.heatmap.shape == one.heatmap.shape
        np.testing.assert_allclose(b.heatmap, one.heatmap, atol=1e-4)
        assert len(b.lesions) == len(one.lesions)
