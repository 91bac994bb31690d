"""Smoke tests for benchmarks/: the harness helpers are right and every script runs with --quick.

Speed is never asserted here (benchmarks measure it); only that the scripts run and their JSON
holds the fields the README table is built from.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))


def test_table_and_format() -> None:
    from _common import fmt, table

    assert fmt(None) == "-"
    assert fmt(1234.4) == "1,234"
    assert fmt(12.34) == "12.3"
    assert fmt(0.91234) == "0.912"
    assert fmt(True) == "yes"
    text = table([{"a": 1, "b": 0.5}, {"a": 22, "b": None}])
    lines = text.splitlines()
    assert lines[0] == "| a  | b   |"
    assert lines[2] == "| 1  | 0.5 |"
    assert lines[3] == "| 22 | -   |"


def test_segmentation_kfold_pooling() -> None:
    """k-fold LGG figures pool per-slice rows: lesion-slice Dice over lesion slices only, per patient too."""
    from segmentation_lgg import _pool

    row = dict(iou=0.0, hd95=None, asd=None, n_lesions=0, n_detected=0, n_false_positive=0)
    cases = [{**row, "dice": 1.0, "truth_empty": True, "patient_id": "a", "n_false_positive": 1},
             {**row, "dice": 0.8, "truth_empty": False, "patient_id": "a", "hd95": 2.0, "n_lesions": 1,
              "n_detected": 1},
             {**row, "dice": 0.2, "truth_empty": False, "patient_id": "b", "hd95": 4.0, "n_lesions": 2,
              "n_detected": 0},
             {**row, "dice": 0.5, "truth_empty": False, "patient_id": "b", "n_lesions": 1}]
    p = _pool(cases)
    assert p["n"] == 4 and p["n_lesion_cases"] == 3
    assert p["dice_lesion_cases"] == pytest.approx(0.5) and p["dice"] == pytest.approx(0.625)
    assert p["dice_lesion_per_patient"] == {"a": pytest.approx(0.8), "b": pytest.approx(0.35)}
    assert p["hd95"] == pytest.approx(3.0) and p["lesion_sensitivity"] == pytest.approx(0.25)
    assert p["fp_per_image"] == pytest.approx(0.25)


def test_patient_dice_summary_means_over_patients() -> None:
    """The k-fold patient Dice: the mean of held-out patients' volume Dice, a bootstrap CI over patients."""
    from segmentation_lgg import patient_dice_summary

    s = patient_dice_summary({"b": 0.6, "a": 0.9, "c": 0.3})
    assert s["mean"] == pytest.approx(0.6) and s["median"] == pytest.approx(0.6) and s["n_patients"] == 3
    assert 0.3 <= s["ci95"][0] < 0.6 < s["ci95"][1] <= 0.9
    assert list(s["per_patient"]) == ["a", "b", "c"]
    assert patient_dice_summary({})["mean"] is None


def test_lgg_dataset_joins_the_folders(shared_data: Path) -> None:
    """--data lgg,lgg_more: the 10 + 25 LGG patients as one dataset, each slice with its mask and patient."""
    import segmentation_lgg

    if not (segmentation_lgg.DATA / "lgg_more").is_dir() or not segmentation_lgg.LGG.is_dir():
        pytest.skip("lgg/ or lgg_more/ is absent from ../shared/data")
    ds = segmentation_lgg.lgg_dataset("lgg,lgg_more")
    one = segmentation_lgg.lgg_dataset("lgg")
    assert len(set(ds.patient_ids)) == len(set(one.patient_ids)) + 25
    assert len(ds) == len(ds.masks) == len(ds.labels) > len(one)
    assert all(Path(m).name.startswith(Path(i).stem) for i, m in zip(ds.items, ds.masks))


def test_context_stack_folder_stacks_neighbouring_flair(shared_data: Path, tmp_path: Path) -> None:
    """2.5D LGG: channel 0/1/2 of slice k = FLAIR of slices k-1/k/k+1 of the same patient; masks unchanged."""
    import numpy as np
    from PIL import Image as PILImage

    import segmentation_lgg

    if not segmentation_lgg.LGG.is_dir():
        pytest.skip(f"{segmentation_lgg.LGG} is absent")
    out = segmentation_lgg.context_stack_folder(tmp_path / "ctx")
    patient = "TCGA_CS_4941_19960909"
    src = segmentation_lgg.LGG / patient
    flair = lambda k: np.asarray(PILImage.open(src / f"{patient}_{k}.tif"))[..., 1]  # noqa: E731
    stack = np.asarray(PILImage.open(out / patient / f"{patient}_10.tif"))
    for c, k in enumerate((9, 10, 11)):
        np.testing.assert_array_equal(stack[..., c], flair(k))
    first = np.asarray(PILImage.open(out / patient / f"{patient}_1.tif"))
    np.testing.assert_array_equal(first[..., 0], flair(1))  # no slice above the first: it repeats itself
    assert (out / patient / f"{patient}_10_mask.tif").read_bytes() == (src / f"{patient}_10_mask.tif").read_bytes()
    assert len(list(out.rglob("*_mask.tif"))) == len(list(segmentation_lgg.LGG.rglob("*_mask.tif")))


def test_model_flops_counts_conv_and_dense() -> None:
    import keras

    from training_throughput import model_flops

    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inp)  # 8*8*4 outputs x 27 MACs
    x = keras.layers.Conv2D(2, 3, strides=2, padding="same")(x)  # 4*4*2 outputs x 36 MACs
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(5)(x)  # 2*5 MACs
    f = model_flops(keras.Model(inp, out))
    macs = 8 * 8 * 4 * 27 + 4 * 4 * 2 * 36 + 2 * 5
    assert f["forward_flops"] == 2 * macs
    assert f["train_flops"] == 6 * macs


def test_reading_readers_agree_on_real_ct(shared_data: Path) -> None:
    import numpy as np

    from reading import read_meddx, read_pydicom, read_sitk

    folder = shared_data / "dicom" / "ct_abdomen_ircadb"
    if not folder.is_dir():
        pytest.skip(f"{folder} absent")
    a, b, c = read_meddx(folder), read_sitk(folder), read_pydicom(folder)
    assert a.shape == b.shape == c.shape == (129, 512, 512)
    assert np.array_equal(a.astype(np.float32), b.astype(np.float32))
    assert np.array_equal(c, b.astype(np.float32))


@pytest.mark.slow
def test_run_all_quick(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--quick", "--results-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=1200, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run_all.json").read_text())
    assert summary["quick"] is True and summary["failed"] == []
    assert {t["benchmark"] for t in summary["timings"]} == {"reading", "inference", "training_throughput",
                                                            "threads", "time_to_accuracy"}
    for name in ("reading", "inference", "training_throughput", "threads", "time_to_accuracy"):
        data = json.loads((tmp_path / f"{name}.json").read_text())
        assert data["quick"] is True
        assert data["machine"]["cores"] >= 1 and len(data["machine"]["loadavg"]) == 3
        assert data["tables"], name
    tp = json.loads((tmp_path / "training_throughput.json").read_text())
    assert all(r["images_per_s"] > 0 and r["train_mflop_per_image"] > 0 for r in tp["rows"])
    assert {s["config"] for s in tp["summary"]} >= {"2D cnn 28px"}
    th = json.loads((tmp_path / "threads.json").read_text())
    assert {(r["intra_op"], r["inter_op"]) for r in th["rows"]} == {(1, 1), (2, 2)}
    inf = json.loads((tmp_path / "inference.json").read_text())
    assert inf["batch_throughput"]["images_per_s"] > 0
    assert any(r["stage"].startswith("2D PNG") and r["p50_s"] > 0 for r in inf["rows"])
    if (tmp_path / "reading.json").is_file() and "rows" in json.loads((tmp_path / "reading.json").read_text()):
        rows = json.loads((tmp_path / "reading.json").read_text())["rows"]
        assert all(r["equal_to_SimpleITK"] for r in rows)


def test_combine_scores_each_run_and_their_mean(tmp_path: Path) -> None:
    """--combine: patient Dice of each run's saved held-out probabilities and of their mean (an ensemble)."""
    import json

    import numpy as np

    from segmentation_lgg import combine

    truth = np.zeros((2, 16, 16), bool)
    truth[:, 4:10, 4:10] = True  # one 6x6 lesion on both slices of patient p
    for name, p_lesion in (("A", 0.9), ("B", 0.2)):
        (tmp_path / name / "fold0").mkdir(parents=True)
        probs = np.where(truth, p_lesion, 0.05).astype(np.float16)
        np.savez(tmp_path / name / "fold0" / "probs.npz", probs=probs, probs_tta=probs, truths=truth,
                 patients=np.array(["p", "p"]), names=np.array(["p_1.png", "p_2.png"]))
    assert combine([tmp_path / "A", tmp_path / "B"], 5) == 0
    means = json.loads((tmp_path / "A" / "combine.json").read_text())["mean"]
    assert means[str(tmp_path / "A")] == pytest.approx(1.0) and means[str(tmp_path / "B")] == pytest.approx(0.0)
    assert means["mean of the runs"] == pytest.approx(1.0)  # (0.9 + 0.2) / 2 >= 0.5
    assert combine([tmp_path / "A", tmp_path / "missing"], 5) == 1
