"""Slice labelling end to end through `meddx.cli.main`: train (HMM / CRF) -> evaluate -> predict -> report.

Generated stacks: a grey "brain" with a bright lesion disc on one contiguous run of slices; one slice inside the
run has a faint lesion and one slice outside it a bright artefact, so per-slice scores err where smoothing along
the stack helps. Written as PNG folders (one per patient) with `*_mask.png` files, the LGG layout.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from meddx.cli import main

N_SLICES = 14
LGG = Path(os.environ.get("MEDDX_LGG_ROOT") or Path(__file__).resolve().parents[3] / "shared" / "data" / "lgg")


def write_stacks(root: Path, n: int = 10, size: int = 40, seed: int = 0, masks: bool = True) -> dict[str, tuple]:
    """Patient folders P00.. of N_SLICES PNG slices (+ masks); returns patient -> [start, stop) lesion run."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    brain = ((yy - size / 2) ** 2 / (0.42 * size) ** 2 + (xx - size / 2) ** 2 / (0.38 * size) ** 2) < 1
    runs = {}
    for s in range(n):
        pid = f"P{s:02d}"
        d = root / pid
        d.mkdir(parents=True, exist_ok=True)
        length = int(rng.integers(4, 8))
        start = int(rng.integers(1, N_SLICES - length))
        runs[pid] = (start, start + length)
        cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
        faint = int(rng.integers(start + 1, start + length - 1))
        art = int(rng.choice([t for t in range(N_SLICES) if not start - 1 <= t <= start + length]))
        for t in range(N_SLICES):
            img = np.where(brain, 0.35, 0.0) + rng.normal(0, 0.04, (size, size)) * brain
            m = np.zeros((size, size), bool)
            if start <= t < start + length:
                m = (yy - cy) ** 2 + (xx - cx) ** 2 <= 16
                img[m] += 0.12 if t == faint else 0.45
            if t == art:
                ay, ax = rng.integers(size // 3, 2 * size // 3, 2)
                img[(yy - ay) ** 2 + (xx - ax) ** 2 <= 9] += 0.4
            Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(d / f"{pid}_{t + 1}.png")
            if masks:
                Image.fromarray(m.astype(np.uint8) * 255).save(d / f"{pid}_{t + 1}_mask.png")
    return runs


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple]]:
    root = tmp_path_factory.mktemp("stacks")
    return root, write_stacks(root)


@pytest.fixture(scope="module")
def runs(stacks: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root, _ = stacks
    out = {}
    for smoother in ("hmm", "crf"):
        run = tmp_path_factory.mktemp("runs") / smoother
        assert main(["train", str(root), "--task", "slice-labelling", "--smoother", smoother, "--out", str(run)]) == 0
        out[smoother] = run
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("smoother", ["hmm", "crf"])
def test_train_stores_safe_run_and_evaluate_smoothing_helps(runs: dict, stacks: tuple, smoother: str,
                                                            tmp_path: Path) -> None:
    from meddx.io.run_info import RunInfo

    run = runs[smoother]
    info = RunInfo.read(run)
    assert info.kind == "slice_labeller" and info.slice_labelling.smoother == smoother
    assert sorted(p.name for p in run.iterdir()) == ["run.json", "slice_labeller.json", "slice_scorer.npz"]
    with np.load(run / "slice_scorer.npz", allow_pickle=False) as z:  # plain numeric arrays, no pickle
        assert all(z[k].dtype != object for k in z.files)
    splits = info.data["splits"]
    assert set(splits.values()) == {"train", "test"} and sum(v == "test" for v in splits.values()) == 2

    out = tmp_path / "eval"
    assert main(["evaluate", str(run), str(stacks[0]), "--split", "test", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["split"] == "test" and m["n_patients"] == 2 and m["n"] == 2 * N_SLICES
    assert {p["patient_id"] for p in m["per_patient"]} == {p for p, s in splits.items() if s == "test"}
    for key in ("raw", "smoothed"):
        assert set(m[key]) >= {"precision", "recall", "f1"}
    assert m["f1_smoothed"] >= m["f1_raw"]
    assert (out / "slice_f1.png").stat().st_size > 0
    every = tmp_path / "all"
    assert main(["evaluate", str(run), str(stacks[0]), "--split", "all", "--out", str(every)]) == 0
    m_all = json.loads((every / "metrics.json").read_text())
    assert m_all["n_patients"] == 10 and m_all["f1_smoothed"] > m_all["f1_raw"]


def test_predict_and_report_say_the_lesion_run(runs: dict, stacks: tuple, tmp_path: Path) -> None:
    from meddx.infer import SliceLabeller, load
    from meddx.transforms.frames import read_study

    root, truth = stacks
    run = runs["hmm"]
    test = sorted(p for p, s in json.loads((run / "run.json").read_text())["data"]["splits"].items() if s == "test")
    out = tmp_path / "pred"
    assert main(["predict", str(run), *[str(root / p) for p in test], "--out", str(out)]) == 0
    rows = _rows(out / "predictions.csv")
    assert [Path(r["input"]).name for r in rows] == test  # one row per stack
    for r, pid in zip(rows, test):
        a, b = truth[pid]
        assert r["predicted"] == "lesion"
        assert (int(r["first_slice"]), int(r["last_slice"])) == (a + 1, b)  # slice numbers are 1-based
        assert int(r["n_lesion_slices"]) == b - a and r["lesion_runs"] == f"{a + 1}-{b}"
    assert len(_rows(out / "slices.csv")) == len(test) * N_SLICES

    predictor = load(run)
    assert isinstance(predictor, SliceLabeller)
    pred = predictor.predict(read_study(root / test[0]))
    assert pred.details["slice_labels"] == [int(c) for c in rows[0]["slice_labels"]]
    assert len(pred.slice_scores) == N_SLICES and pred.kind == "slice_labeller"

    rep = tmp_path / "report"
    assert main(["report", str(run), str(root / test[0]), "--out", str(rep)]) == 0
    assert (rep / "report.html").is_file() and (rep / "report.pdf").is_file()
    assert _rows(rep / "predictions.csv")[0]["first_slice"] == rows[0]["first_slice"]


def test_volume_input(runs: dict, stacks: tuple, tmp_path: Path) -> None:
    """A NIfTI volume of the same slices (slices along the first array axis) labels the same slices."""
    import nibabel as nib
    from PIL import Image

    root, truth = stacks
    pid = sorted(truth)[0]
    vol = np.stack([np.asarray(Image.open(root / pid / f"{pid}_{t + 1}.png")) for t in range(N_SLICES)])
    # NIfTI axes are (x, y, z); meddx reads volumes as (z, y, x) arrays, so slices come back on the first axis
    nib.save(nib.Nifti1Image(np.ascontiguousarray(vol.transpose(2, 1, 0)).astype(np.uint8), np.eye(4)),
             tmp_path / "vol.nii.gz")
    folder, volume = tmp_path / "f", tmp_path / "v"
    assert main(["predict", str(runs["crf"]), str(root / pid), "--out", str(folder)]) == 0
    assert main(["predict", str(runs["crf"]), str(tmp_path / "vol.nii.gz"), "--out", str(volume)]) == 0
    a, b = _rows(folder / "predictions.csv")[0], _rows(volume / "predictions.csv")[0]
    assert a["slice_labels"] == b["slice_labels"] and int(b["n_slices"]) == N_SLICES


def _one_line_error(capsys: pytest.CaptureFixture, argv: list[str], *words: str) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("meddx: error:") and "\n" not in err and "Traceback" not in err
    for w in words:
        assert w in err


def test_bad_input_is_one_line_exit_2(runs: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "empty_stack"
    empty.mkdir()
    _one_line_error(capsys, ["predict", str(runs["hmm"]), str(empty), "--out", str(tmp_path / "o")], "empty_stack")
    _one_line_error(capsys, ["report", str(runs["hmm"]), str(empty), "--out", str(tmp_path / "r")], "empty_stack")
    assert not (tmp_path / "o" / "predictions.csv").exists()

    nomask = tmp_path / "nomask"
    write_stacks(nomask, n=4, masks=False)
    _one_line_error(capsys, ["train", str(nomask), "--task", "slice-labelling", "--out", str(tmp_path / "run1")],
                    "P00", "mask")
    assert not (tmp_path / "run1" / "run.json").exists()

    with_empty = tmp_path / "with_empty"
    write_stacks(with_empty, n=3)
    (with_empty / "P99").mkdir()
    _one_line_error(capsys, ["train", str(with_empty), "--task", "slice-labelling", "--out", str(tmp_path / "run2")],
                    "P99")
    _one_line_error(capsys, ["train", str(tmp_path / "nope"), "--task", "slice-labelling", "--out",
                             str(tmp_path / "run3")], "nope")


def test_run_info_kind_round_trip() -> None:
    from meddx.io.run_info import RunInfo, SliceLabellingSettings

    info = RunInfo(kind="slice_labeller", model="m", task="binary", class_names=["normal", "lesion"],
                   spatial_ndim=2, input_shape=[None, 64, 64, 3], preprocessing={},
                   slice_labelling=SliceLabellingSettings(smoother="crf"))
    back = RunInfo.from_dict(json.loads(json.dumps(info.to_dict())))
    assert back.slice_labelling == info.slice_labelling and back.kind == "slice_labeller"
    old = {"model": "cnn", "task": "binary", "class_names": ["a", "b"], "spatial_ndim": 2, "input_shape": [28, 28, 1],
           "preprocessing": {}}
    assert RunInfo.from_dict(old).slice_labelling is None and "slice_labelling" not in RunInfo.from_dict(old).to_dict()


@pytest.mark.slow
@pytest.mark.skipif(not LGG.is_dir(), reason="../shared/data/lgg is absent")
def test_lgg_smoke(tmp_path: Path) -> None:
    """Real LGG stacks: train (HMM), evaluate on the held-out patients, predict one patient's stack."""
    run = tmp_path / "run"
    assert main(["train", str(LGG), "--task", "slice-labelling", "--out", str(run)]) == 0
    assert main(["evaluate", str(run), str(LGG), "--out", str(tmp_path / "ev")]) == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["n_patients"] >= 1 and m["f1_raw"] > 0.5 and m["f1_smoothed"] > 0.5
    pid = m["per_patient"][0]["patient_id"]
    assert main(["predict", str(run), str(LGG / pid), "--out", str(tmp_path / "pr")]) == 0
    row = _rows(tmp_path / "pr" / "predictions.csv")[0]
    assert row["predicted"] == "lesion" and int(row["n_lesion_slices"]) > 0
