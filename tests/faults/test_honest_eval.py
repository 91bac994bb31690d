"""Honest evaluation, hostile inputs: leaks between splits (duplicated rows, copies under other names, copies in
another DATA), the RUN's own recorded split, labels never trained on, rare or malformed labels, masks of another
size, and run.json that does not describe its model. Each must be one `meddx: error: <file>: <problem>` line
(exit 2) or, where stated, a loud warning -- never a traceback or a silently optimistic metric."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meddx.data.datasets import Dataset, load_dataset
from meddx.data.integrity import (bad_label_reason, case_hashes, check_classes, check_mask_shapes,
                                  check_no_duplicates, content_hash)
from meddx.errors import DataError, InputError
from meddx.train.config import TrainConfig
from tests.files import write_manifest, write_png

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "runs" / "demo_cls"


def _cli(argv: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from meddx.cli import main

    capfd.readouterr()
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    return rc, capfd.readouterr().err


def _one_line_error(rc: int, err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("meddx: error: ")]
    assert rc == 2, err
    assert len(errors) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in errors[0], (n, errors[0])


def _split_cases(ds: Dataset, **cfg: object):
    from meddx.train.fit import split_cases

    return split_cases(ds, TrainConfig(**cfg), lambda s: None)


# -- train time: leaks between splits --------------------------------------------------------------------------

def test_duplicated_manifest_row_is_refused_naming_both(tmp_path: Path) -> None:
    rows = [{"path": str(write_png(tmp_path / f"i{i}.png", i)), "label": "ab"[i % 2]} for i in range(20)]
    rows.append(dict(rows[3]))
    ds = load_dataset(write_manifest(tmp_path / "m.csv", rows))
    with pytest.raises(DataError, match=r"listed twice: .*i3\.png and .*i3\.png"):
        _split_cases(ds)


def test_cli_train_on_a_refused_manifest_writes_nothing(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    rows = [{"path": str(write_png(tmp_path / f"i{i}.png", i)), "label": "ab"[i % 2]} for i in range(20)]
    rows.append(dict(rows[3]))
    rc, err = _cli(["train", str(write_manifest(tmp_path / "m.csv", rows)), "--epochs", "1",
                    "--out", str(tmp_path / "RUN")], capfd)
    _one_line_error(rc, err, "m.csv", "listed twice")
    assert not (tmp_path / "RUN").exists()  # not even resume.json: the RUN folder is made after DATA's checks


def test_copy_under_another_name_in_train_and_test_is_refused(tmp_path: Path) -> None:
    rows = [{"path": str(write_png(tmp_path / f"i{i}.png", i)), "label": "ab"[i % 2],
             "split": "train" if i < 14 else ("val" if i < 17 else "test")} for i in range(20)]
    shutil.copy(tmp_path / "i2.png", tmp_path / "renamed_copy.png")
    rows.append({"path": str(tmp_path / "renamed_copy.png"), "label": "a", "split": "test"})
    ds = load_dataset(write_manifest(tmp_path / "m.csv", rows))
    with pytest.raises(DataError, match=r"identical content in two splits: .*i2\.png \(train\) and .*renamed_copy"):
        _split_cases(ds)


def test_copies_stay_together_when_meddx_draws_the_splits(tmp_path: Path) -> None:
    """No split column: the copies (different names, different 'patients') are joined, never split apart."""
    for i in range(40):
        write_png(tmp_path / "data" / "ab"[i % 2] / f"i{i}.png", i)
    for k in range(5):  # five copies of one case scattered over names
        shutil.copy(tmp_path / "data" / "a" / "i0.png", tmp_path / "data" / "a" / f"zz_copy{k}.png")
    ds = load_dataset(tmp_path / "data")
    splits, _, _ = _split_cases(ds)
    names = ds.item_names()
    group = {splits[i] for i, n in enumerate(names) if n.endswith(("i0.png",)) or "zz_copy" in n}
    assert len(group) == 1, group


def test_npz_copies_in_later_splits_are_recorded_in_the_earlier_split(tmp_path: Path) -> None:
    """Published arrays (PneumoniaMNIST's train and val share 8 images): the val or test copy of a training
    image is recorded as training (splits.csv), loudly, so it is neither validated nor tested on."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (60, 8, 8), dtype=np.uint8)
    y = (np.arange(60) % 2).astype(np.uint8)[:, None]
    x_val = x[40:50].copy()
    x_val[0] = x[1]  # a validation case equal to a training case (PneumoniaMNIST holds 8 such)
    np.savez(tmp_path / "v.npz", train_images=x[:40], train_labels=y[:40], val_images=x_val, val_labels=y[40:50])
    logs: list[str] = []
    from meddx.train.fit import split_cases

    splits, tr, va = split_cases(load_dataset(tmp_path / "v.npz"), TrainConfig(), logs.append)
    assert splits[40] == "train" and 40 in tr and 40 not in va
    assert any("recorded in that split" in s for s in logs)
    x_test = x[50:].copy()
    x_test[3] = x[5]
    np.savez(tmp_path / "t.npz", train_images=x[:40], train_labels=y[:40], val_images=x[40:50],
             val_labels=y[40:50], test_images=x_test, test_labels=y[50:])
    splits, _, _ = _split_cases(load_dataset(tmp_path / "t.npz"))
    assert splits[53] == "train" and (splits == "test").sum() == 9


def test_content_hash_sees_content_not_names_or_dtype_tricks(tmp_path: Path) -> None:
    a = np.arange(16, dtype=np.uint8).reshape(4, 4)
    assert content_hash(a) == content_hash(a.copy())
    assert content_hash(a) != content_hash(a.astype(np.uint16))  # same values, another dtype: another case
    assert content_hash(a) != content_hash(a.reshape(2, 8))
    f1, f2 = write_png(tmp_path / "x.png", 1), tmp_path / "y.png"
    shutil.copy(f1, f2)
    assert content_hash(f1) == content_hash(f2)
    (tmp_path / "series").mkdir()
    shutil.copy(f1, tmp_path / "series" / "1.png")
    assert len(content_hash(tmp_path / "series")) == 32  # a folder case (a DICOM series) hashes its files


# -- train time: rare and malformed labels ----------------------------------------------------------------------

def _class_ds(tmp_path: Path, counts: dict[str, int], patients: bool = False) -> Dataset:
    rows, k = [], 0
    for label, n in counts.items():
        for _ in range(n):
            row = {"path": str(write_png(tmp_path / f"c{k}.png", k, size=16)), "label": label}
            if patients:
                row["patient_id"] = f"p{k}"
            rows.append(row)
            k += 1
    return load_dataset(write_manifest(tmp_path / "m.csv", rows))


@pytest.mark.parametrize("n_rare", [1, 2, 4])
def test_a_class_with_very_few_cases_is_an_error_unless_allowed(tmp_path: Path, n_rare: int) -> None:
    ds = _class_ds(tmp_path, {"normal": 60, "pneumonia": 40, "tumour": n_rare})
    with pytest.raises(DataError, match=rf"class 'tumour' has only {n_rare} case.*--allow-rare-classes"):
        _split_cases(ds)
    splits = np.where(np.arange(len(ds)) % 5 == 0, "val", "train")
    check_classes(ds, splits, allow_rare=True)  # the override


def test_a_class_missing_from_validation_is_an_error(tmp_path: Path) -> None:
    ds = _class_ds(tmp_path, {"a": 30, "b": 30, "c": 6})
    splits = np.asarray(["train"] * len(ds), dtype="<U8")
    splits[:10] = "val"  # only a's in validation
    with pytest.raises(DataError, match=r"class 'b' has no case in the validation split"):
        check_classes(ds, splits)


@pytest.mark.parametrize("label", ["tu\nmour", "tumour\r", "a\tb", "zero\u200bwidth", "bell\x07", "   "])
def test_labels_with_control_characters_are_errors(tmp_path: Path, label: str) -> None:
    assert bad_label_reason(label)
    ds = Dataset(items=list(np.zeros((12, 4, 4), np.uint8)), labels=np.arange(12) % 2, class_names=["ok", label],
                 task="binary", source="mem", kind="arrays")
    with pytest.raises(DataError, match=r"label .* (contains the control character|is blank)"):
        check_classes(ds, np.asarray(["train"] * 12), allow_rare=True)  # the override does not cover this


def test_manifest_label_with_an_embedded_newline_fails_train_in_one_line(tmp_path: Path, capfd) -> None:
    rows = [{"path": str(write_png(tmp_path / f"i{i}.png", i, size=16)), "label": ["normal", "tu\nmour"][i % 2]}
            for i in range(30)]
    m = write_manifest(tmp_path / "m.csv", rows)
    rc, err = _cli(["train", str(m), "--out", str(tmp_path / "run"), "--epochs", "1"], capfd)
    _one_line_error(rc, err, "m.csv", "control character '\\n'")
    assert not (tmp_path / "run" / "run.json").exists()


def test_rare_class_fails_train_in_one_line(tmp_path: Path, capfd) -> None:
    ds_dir = tmp_path / "d"
    for i in range(40):
        write_png(ds_dir / ("normal" if i % 2 else "pneumonia") / f"{i}.png", i, size=16)
    write_png(ds_dir / "tumour" / "only.png", 99, size=16)
    rc, err = _cli(["train", str(ds_dir), "--out", str(tmp_path / "run"), "--epochs", "1"], capfd)
    _one_line_error(rc, err, "class 'tumour' has only 1 case", "--allow-rare-classes")


# -- masks -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mask_size", [(32, 32), (64, 63), (128, 128)])
def test_mask_of_another_size_is_an_error_not_resized(tmp_path: Path, mask_size: tuple[int, int]) -> None:
    img = write_png(tmp_path / "img.png", 1)
    mask = tmp_path / "img_mask.png"
    Image.fromarray(np.zeros(mask_size, np.uint8)).save(mask)
    ds = Dataset(items=[str(img)], labels=np.zeros(1, int), class_names=["a", "b"], task="binary",
                 source=str(tmp_path), kind="manifest", masks=[str(mask)])
    with pytest.raises(DataError, match=r"img_mask\.png: mask is .* but its image img\.png is 64x64"):
        check_mask_shapes(ds)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(mask)
    check_mask_shapes(ds)  # the right size passes


def test_segmentation_training_refuses_a_wrong_size_mask_in_one_line(tmp_path: Path, capfd) -> None:
    rows = []
    for i in range(12):
        img = write_png(tmp_path / f"i{i}.png", i, size=32)
        m = tmp_path / f"i{i}_mask.png"
        Image.fromarray(np.zeros((32, 32) if i != 7 else (16, 16), np.uint8)).save(m)
        rows.append({"path": str(img), "label": str(i % 2), "mask": str(m), "patient_id": f"p{i}"})
    man = write_manifest(tmp_path / "m.csv", rows)
    rc, err = _cli(["train", str(man), "--task", "segmentation", "--out", str(tmp_path / "run"), "--epochs", "1"],
                   capfd)
    _one_line_error(rc, err, "i7_mask.png", "16x16", "32x32")


# -- evaluate: the RUN's recorded split, copies of training cases, labels never trained on ---------------------

def _data_and_run(tmp_path: Path, n: int = 24, train_counts: dict[str, int] | None = None) -> tuple[Path, Path]:
    """A folder DATA (lesion/, normal/) and a RUN (the demo classifier) whose splits.csv records, by content hash,
    the first half as train, then val, the rest test -- a split no redraw would give."""
    data = tmp_path / "data"
    files = [write_png(data / ("lesion" if i % 2 else "normal") / f"{i:03d}.png", i) for i in range(n)]
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    info = json.loads((run / "run.json").read_text())
    info["data"]["source"] = str(data)
    info["data"]["kind"] = "folder"
    if train_counts is not None:
        info["data"]["summary"]["splits"]["train"]["counts"] = train_counts
    (run / "run.json").write_text(json.dumps(info))
    rows = ["item,label,split,sha256"]
    for i, f in enumerate(files):
        split = "train" if i < n // 2 else ("val" if i < n // 2 + 4 else "test")
        rows.append(f"{f},{f.parent.name},{split},{content_hash(f)}")
    (run / "splits.csv").write_text("\n".join(rows) + "\n")
    return data, run


def test_evaluate_uses_the_runs_recorded_split(tmp_path: Path) -> None:
    from meddx.app.evaluate import evaluate_run

    data, run = _data_and_run(tmp_path)
    m = evaluate_run(run, data, tmp_path / "out", split="test", log=lambda s: None)
    assert m["n"] == 24 - 12 - 4  # exactly the recorded test cases
    # a case added to DATA since training counts as test (and is said so); the recorded ones keep their split
    write_png(data / "lesion" / "new.png", 1000)
    logs: list[str] = []
    m = evaluate_run(run, data, tmp_path / "out2", split="test", log=logs.append)
    assert m["n"] == 9 and any("not in the RUN's splits.csv" in s for s in logs)


def test_evaluate_leaves_out_a_test_copy_of_a_training_case_loudly(tmp_path: Path) -> None:
    from meddx.app.evaluate import evaluate_run

    data, run = _data_and_run(tmp_path)
    other = _external(tmp_path, data / "normal" / "004.png", 500)  # a training case, renamed
    logs: list[str] = []
    m = evaluate_run(run, other, tmp_path / "out", split="test", log=logs.append)
    assert m["n"] == 8 and m["excluded_seen_in_training"] == 1  # the renamed copy is not scored
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["excluded_seen_in_training"] == 1
    assert any("1 test case(s)" in s and "left out of the test metrics" in s for s in logs)
    assert not any("renamed.png" in s for s in logs)  # input file names stay out of logs


def test_evaluate_refuses_a_test_set_made_of_training_cases(tmp_path: Path, capfd) -> None:
    data, run = _data_and_run(tmp_path)
    rows = [{"path": str(f), "label": f.parent.name, "split": "test"}
            for f in sorted((data / "normal").glob("00*.png"))[:3]]  # recorded train cases, relabelled test
    man = write_manifest(tmp_path / "all_train.csv", rows)
    rc, err = _cli(["evaluate", str(run), str(man), "--out", str(tmp_path / "out")], capfd)
    _one_line_error(rc, err, "all_train.csv", "every test case is a case the RUN trained on")
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_evaluate_leaves_out_a_validation_copy_and_marks_all(tmp_path: Path) -> None:
    from meddx.app.evaluate import evaluate_run

    data, run = _data_and_run(tmp_path)
    other = _external(tmp_path, data / "normal" / "012.png", 700)  # recorded as val
    m = evaluate_run(run, other, tmp_path / "o1", split="test", log=lambda s: None)
    assert m["n"] == 8 and m["excluded_seen_in_training"] == 1
    logs: list[str] = []
    evaluate_run(run, other, tmp_path / "o2", split="all", log=logs.append)
    assert any("1 of the 9 cases were used for training or model selection" in s for s in logs)


def _external(tmp_path: Path, copy_of: Path, seed: int) -> Path:
    """An external test set (manifest, every case split 'test') of 8 new cases plus a renamed copy of `copy_of`."""
    other = tmp_path / "external"
    rows = [{"path": str(write_png(other / f"ext{i}.png", seed + i)), "label": "lesion" if i % 2 else "normal",
             "split": "test"} for i in range(8)]
    shutil.copy(copy_of, other / "renamed.png")
    rows.append({"path": str(other / "renamed.png"), "label": copy_of.parent.name, "split": "test"})
    return write_manifest(tmp_path / "external.csv", rows)


def test_evaluate_refuses_a_label_never_seen_in_training(tmp_path: Path, capfd) -> None:
    data, run = _data_and_run(tmp_path, train_counts={"lesion": 0, "normal": 12})
    rc, err = _cli(["evaluate", str(run), str(data), "--out", str(tmp_path / "out")], capfd)
    _one_line_error(rc, err, "'lesion'", "never occurred in the RUN's training data")


def test_evaluate_refuses_an_unknown_label_folder(tmp_path: Path, capfd) -> None:
    data, run = _data_and_run(tmp_path)
    write_png(data / "tumour" / "t.png", 3)
    rc, err = _cli(["evaluate", str(run), str(data), "--out", str(tmp_path / "out")], capfd)
    _one_line_error(rc, err, "unknown class folder(s) tumour")


# -- run.json must describe its model -----------------------------------------------------------------------------

@pytest.mark.parametrize("edit, needle", [
    ({"class_names": ["a", "b", "c"], "task": "multiclass", "positive_class": None, "threshold": None},
     "should have 3 output unit(s) but model.keras has 1"),
    ({"kind": "segmenter"}, "says segmenter but model.keras outputs (None, 1), not a mask"),
    ({"class_names": "lesion"}, "must be a list of at least two distinct names"),
    ({"class_names": ["lesion", "normal", "other"]}, "a binary task has 2 class names, not 3"),
    ({"input_shape": "64"}, "input_shape must be a list"),
    ({"input_shape": [32, 32, 1]}, "input_shape [32, 32, 1] does not match the model's input [64, 64, 1]"),
    ({"input_shape": [64, 64, 64, 1], "spatial_ndim": 3}, "does not match the model's input"),
    ({"class_names": ["lesion", "lesion"]}, "at least two distinct names"),
    ({"task": "multilabel", "class_names": ["a", "b"], "positive_class": None},
     "should have 2 output unit(s) but model.keras has 1"),
])
def test_run_json_that_does_not_match_its_model_is_refused(tmp_path: Path, capfd, edit: dict, needle: str) -> None:
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    info = json.loads((run / "run.json").read_text())
    info.update(edit)
    (run / "run.json").write_text(json.dumps(info))
    from meddx.infer import load

    with pytest.raises(InputError) as exc:
        load(run)
    assert str(exc.value).startswith(f"{run / 'run.json'}: ") and needle in str(exc.value), str(exc.value)
    write_png(tmp_path / "x.png", 0)
    rc, err = _cli(["predict", str(run), str(tmp_path / "x.png"), "--out", str(tmp_path / "out")], capfd)
    _one_line_error(rc, err, f"{run / 'run.json'}: ", needle)


def test_the_fixture_runs_still_load() -> None:
    from meddx.infer import load

    for name in ("demo_cls", "demo_seg", "breast_cls"):
        load(FIXTURE.parent / name)


def test_hashes_of_a_dataset_are_stable(tmp_path: Path) -> None:
    ds = _class_ds(tmp_path, {"a": 3, "b": 3})
    assert case_hashes(ds) == case_hashes(ds) and len(set(case_hashes(ds))) == 6
    splits = np.asarray(["train"] * 6, dtype="<U8")
    assert check_no_duplicates(ds, splits) == case_hashes(ds)


def test_one_file_under_two_labels_is_refused(tmp_path: Path) -> None:
    """The same image filed as 'normal' and as 'lesion' (a copy in the wrong class folder)."""
    for i in range(30):
        write_png(tmp_path / "data" / ("lesion" if i % 2 else "normal") / f"{i}.png", i, size=16)
    shutil.copy(tmp_path / "data" / "normal" / "0.png", tmp_path / "data" / "lesion" / "dup.png")
    with pytest.raises(DataError, match=r"identical content with two labels: .*dup\.png \('lesion'\) and .*0\.png "
                                        r"\('normal'\)|identical content with two labels: .*0\.png \('normal'\) and "
                                        r".*dup\.png \('lesion'\)"):
        _split_cases(load_dataset(tmp_path / "data"))
