"""Segmentation training, evaluation and inference on generated disc images (fast, tiny U-Net)."""

from __future__ import annotations

import csv
import re
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from meddx.data.lgg import paired_folder_dataset
from meddx.train.config import TrainConfig
from meddx.models.sliding_window import sliding_window_predict
from meddx.transforms.post import postprocess_mask, postprocess_stacks

SIZE = 40  # generated images; the model trains at 32 px, so predictions are resized back


def make_discs(root: Path, n_patients: int = 8, per_patient: int = 6, seed: int = 0) -> Path:
    """Patients' folders of noisy images: a bright disc (and its mask) on most, nothing on some."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for p in range(n_patients):
        for k in range(per_patient):
            img = rng.normal(60, 12, (SIZE, SIZE))
            mask = np.zeros((SIZE, SIZE), np.uint8)
            if k % 3 != 2:
                r = rng.uniform(4, 9)
                cy, cx = rng.uniform(r + 1, SIZE - r - 1, 2)
                mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 255
                img[mask > 0] += 90
            d = root / f"p{p}"
            d.mkdir(parents=True, exist_ok=True)
            PILImage.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"p{p}_{k}.png")
            PILImage.fromarray(mask).save(d / f"p{p}_{k}_mask.png")
    return root


@pytest.fixture(scope="module")
def discs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_discs(tmp_path_factory.mktemp("discs"))


@pytest.fixture(scope="module")
def trained(discs: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from meddx.train.segmentation import train_segmenter

    out = tmp_path_factory.mktemp("segrun") / "run"
    cfg = TrainConfig(task="segmentation", epochs=15, batch_size=8, learning_rate=1e-2, image_size=32,
                      patience=25, seed=1, val_fraction=0.2, test_fraction=0.2)
    info = train_segmenter(discs, out, cfg, base_filters=4, depth=2, verbose=0, log=lambda s: None)
    return out, info


def test_train_writes_a_loadable_run(trained: tuple[Path, dict]) -> None:
    from meddx.infer import load

    out, info = trained
    for name in ("model.keras", "run.json", "history.csv", "training_curves.png", "splits.csv", "val_metrics.json"):
        assert (out / name).is_file(), name
    assert not (out / "backup").exists() and not (out / "checkpoints").exists()
    run = load(out)
    assert run.info.kind == "segmenter" and run.info.model == "unet"
    assert run.class_names == ["background", "lesion"]
    assert run.info.input_shape == [32, 32, 1] and run.spatial_ndim == 2
    saved = json.loads((out / "run.json").read_text())
    for key in ("preprocessing", "config", "data", "val_metrics", "created", "meddx_version"):
        assert key in saved and getattr(run.info, key), key
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert len(rows) == info["epochs_run"] and "val_dice" in rows[0]
    assert run.model.output_shape == (None, 32, 32, 1)


def test_no_patient_in_two_splits(trained: tuple[Path, dict]) -> None:
    out, _ = trained
    rows = list(csv.DictReader((out / "splits.csv").open()))
    seen: dict[str, set[str]] = {}
    for r in rows:
        seen.setdefault(r["patient_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in seen.values())
    assert {r["split"] for r in rows} == {"train", "val", "test"}


def test_evaluate_beats_trivial_baseline(trained: tuple[Path, dict], discs: Path, tmp_path: Path) -> None:
    from meddx.app import evaluate_run

    out, _ = trained
    m = evaluate_run(out, discs, tmp_path / "eval", split="test", log=lambda s: None)
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert (tmp_path / "eval" / "segmentation_panel.png").stat().st_size > 1000
    assert saved["n"] == m["n"] > 0
    for key in ("dice", "iou", "hd95", "asd", "lesion_sensitivity", "fp_per_image", "dice_lesion_cases"):
        assert key in saved
    assert saved["units"] == "px"
    # the all-background predictor scores 0 on lesion cases; a trained net finds bright discs
    assert saved["dice_lesion_cases"] > 0.6
    assert saved["lesion_sensitivity"] >= 0.75
    # masks are compared in the images' own geometry (40 px), not the 32 px model input
    ds = paired_folder_dataset(discs)
    assert saved["per_case"][0]["item"] in ds.items


def test_predict_segmentation_in_input_geometry(trained: tuple[Path, dict], discs: Path, tmp_path: Path) -> None:
    from meddx.app import predict_inputs
    from meddx.infer import load
    from meddx.io import read_image

    out, _ = trained
    run = load(out)
    r = run.predict(read_image(discs / "p0" / "p0_0.png"))
    assert r.mask.shape == (SIZE, SIZE) and r.mask.dtype == bool
    truth = np.asarray(PILImage.open(discs / "p0" / "p0_0_mask.png")) > 0
    inter = np.logical_and(r.mask, truth).sum()
    assert 2 * inter / (r.mask.sum() + truth.sum()) > 0.5
    assert r.details["n_lesions"] >= 1 and r.lesions[0]["n_px"] > 0
    csv_path = predict_inputs(out, [discs / "p0"], tmp_path / "pred", log=lambda s: None)
    rows = list(csv.DictReader(Path(csv_path).open()))
    assert len(rows) == 6  # the *_mask.png files are not inputs
    assert Path(rows[0]["mask"]).is_file()


def test_sliding_window_reproduces_whole_image() -> None:
    import keras

    rng = np.random.default_rng(0)
    vol = rng.normal(size=(21, 30, 17, 2)).astype(np.float32)
    inp = keras.Input((None, None, None, 2))
    pointwise = keras.Model(inp, keras.layers.Conv3D(1, 1)(inp))
    whole = np.asarray(pointwise.predict(vol[None], verbose=0))[0]
    for patch, overlap in (((8, 8, 8), 0.5), ((16, 12, 17), 0.25), ((32, 32, 32), 0.5)):
        sw = sliding_window_predict(pointwise, vol, patch, overlap)
        np.testing.assert_allclose(sw, whole, atol=1e-5)
    # a 3x3 conv net: one window covering the whole image is exact (same padding, same weights)
    inp2 = keras.Input((None, None, 1))
    conv = keras.Model(inp2, keras.layers.Conv2D(1, 3, padding="same")(inp2))
    img = rng.normal(size=(24, 24, 1)).astype(np.float32)
    full = np.asarray(conv.predict(img[None], verbose=0))[0]
    np.testing.assert_allclose(sliding_window_predict(conv, img, (24, 24)), full, atol=1e-5)
    # an input smaller than the patch is padded and cropped back to its own shape
    small = sliding_window_predict(pointwise, vol[:5], (8, 8, 8))
    np.testing.assert_allclose(small, whole[:5], atol=1e-5)


def test_postprocess_removes_small_components() -> None:
    m = np.zeros((20, 20), bool)
    m[2:8, 2:8] = True  # 36 px
    m[12:14, 12:14] = True  # 4 px
    m[15:19, 2:7] = True  # 20 px
    assert postprocess_mask(m, min_size=5).sum() == 56
    assert postprocess_mask(m, keep_largest=1).sum() == 36
    assert postprocess_mask(m).sum() == 60


def test_stack_postprocessing_drops_one_slice_alarms_and_keeps_the_lesion_across_slices() -> None:
    # patient a: a lesion through slices 2-10 (named out of order: slice 10 sorts after 9, not after 1),
    # a small blob on slice 1 far from it; patient b: a lone blob, its own largest, so it stays
    slices = {n: np.zeros((20, 20), bool) for n in range(1, 11)}
    for n in range(2, 11):
        slices[n][5:10, 5:10] = True
    slices[1][15:18, 15:18] = True  # 9 px; the lesion is 225 px
    names = [f"a/a_{n}.png" for n in (10, 1, 2, 3, 4, 5, 6, 7, 8, 9)]
    masks = [slices[int(Path(n).stem.split("_")[1])] for n in names]
    lone = np.zeros((20, 20), bool)
    lone[0:2, 0:2] = True
    out, skipped = postprocess_stacks(masks + [lone], ["a"] * 10 + ["b"], names + ["b/b_1.png"], 0.25)
    assert skipped == 0
    assert not out[1].any()  # a_1: the 9 px alarm is under 0.25 x 225 px
    assert all(out[k].sum() == 25 for k in (0, 2, 3, 4, 5, 6, 7, 8, 9))  # the lesion, slice 10 included
    assert out[10].sum() == 4
    kept, _ = postprocess_stacks(masks, ["a"] * 10, names, 0.03)  # 9 px >= 0.03 x 225 px: kept
    assert kept[1].sum() == 9
    same, _ = postprocess_stacks(masks, ["a"] * 10, names, 0.0)
    assert all((s == m).all() for s, m in zip(same, masks))
    odd, skipped = postprocess_stacks([np.ones((4, 4), bool), np.ones((5, 5), bool)], ["c", "c"], ["c_1", "c_2"], 0.5)
    assert skipped == 1 and odd[0].sum() == 16 and odd[1].sum() == 25


def test_stack_postprocessing_is_applied_by_evaluate(trained: tuple[Path, dict], discs: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import meddx.transforms.post as post
    from meddx.app.evaluate import evaluate_segmenter
    from meddx.infer import load

    out, _ = trained
    run = load(out)
    plain = evaluate_segmenter(run, discs, tmp_path / "plain", log=lambda s: None)
    seen: list[int] = []
    real = post.postprocess_stacks

    def spy(masks, patients, names, fraction):  # type: ignore[no-untyped-def]
        seen.append(len(masks))
        return real(masks, patients, names, fraction)

    monkeypatch.setattr(post, "postprocess_stacks", spy)
    from meddx.cli import main

    assert main(["evaluate", str(out), str(discs), "--out", str(tmp_path / "stacked"),
                 "--stack-min-fraction", "0.5"]) == 0
    stacked = json.loads((tmp_path / "stacked" / "metrics.json").read_text())
    assert seen == [plain["n"]]
    assert main(["evaluate", str(out), str(discs), "--out", str(tmp_path / "bad"), "--stack-min-fraction", "1.5"]) == 2
    assert not (tmp_path / "bad" / "metrics.json").exists()
    # the discs move between slices (not one 3D lesion): components under half the largest go
    assert stacked["fp_per_image"] <= plain["fp_per_image"]
    assert sum(c["pred_empty"] for c in stacked["per_case"]) >= sum(c["pred_empty"] for c in plain["per_case"])


def test_validation_fraction_is_checked_and_old_runs_read_as_before() -> None:
    from meddx.errors import ConfigError
    from meddx.train.config import VAL_FRACTION, recorded_val_fraction

    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match="val_fraction must be in"):
            TrainConfig(val_fraction=bad).validate()
    with pytest.raises(ConfigError, match="test_fraction must be in"):
        TrainConfig(test_fraction=1.5).validate()
    assert recorded_val_fraction({}) == recorded_val_fraction({"val_fraction": None}) == VAL_FRACTION == 0.15
    assert recorded_val_fraction({"val_fraction": 0.0}) == 0.0


def test_stack_min_fraction_is_validated_and_recorded(tmp_path: Path) -> None:
    from meddx.cli import main
    from meddx.errors import ConfigError

    with pytest.raises(ConfigError, match="stack_min_fraction"):
        TrainConfig(task="segmentation", stack_min_fraction=1.0).validate()
    with pytest.raises(ConfigError, match="segmentation only"):
        TrainConfig(task="classification", stack_min_fraction=0.25).validate()
    data = make_discs(tmp_path / "small", n_patients=5, per_patient=3, seed=3)
    out = tmp_path / "run"
    assert main(["train", str(data), "--out", str(out), "--task", "segmentation", "--epochs", "1",
                 "--image-size", "32", "--stack-min-fraction", "0.25"]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["config"]["stack_min_fraction"] == 0.25 and info["segmentation"]["stack_min_fraction"] == 0.25


def test_cli_train_segmentation(tmp_path: Path) -> None:
    from meddx.cli import main

    discs = make_discs(tmp_path / "small", n_patients=5, per_patient=3, seed=2)
    out = tmp_path / "clirun"
    rc = main(["train", str(discs), "--out", str(out), "--task", "segmentation", "--epochs", "1",
               "--image-size", "16"])
    assert rc == 0
    info = json.loads((out / "run.json").read_text())
    assert info["kind"] == "segmenter" and info["epochs_run"] == 1
    rc = main(["evaluate", str(out), str(discs), "--out", str(tmp_path / "ev")])
    assert rc == 0 and (tmp_path / "ev" / "metrics.json").is_file()


def test_cli_train_segmentation_bad_data_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A missing manifest or a mask of another size: one error line, exit 2, no RUN folder (not even resume.json)."""
    from meddx.cli import main

    bad = make_discs(tmp_path / "bad", n_patients=5, per_patient=3, seed=6)
    PILImage.fromarray(np.zeros((SIZE // 2, SIZE // 2), np.uint8)).save(bad / "p0" / "p0_0_mask.png")
    for data, problem in ((tmp_path / "missing.csv", "no such file or folder"), (bad, "")):
        out = tmp_path / f"run_{Path(data).stem}"
        rc = main(["train", str(data), "--out", str(out), "--task", "segmentation", "--epochs", "1"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith("meddx: error: ") and problem in err[0], err
        assert not out.exists()


@pytest.mark.parametrize("graph", [True, False], ids=["graph", "numpy"])
@pytest.mark.parametrize("augment", ["flip", "light", "strong"])
def test_augmentation_moves_image_and_mask_together(augment: str, graph: bool) -> None:
    """Flips, rotations and zooms are applied identically to the image and its mask (graph and numpy paths)."""
    from meddx.train.seg_pipeline import tf_dataset_2d

    x = np.zeros((6, 48, 48, 2), np.float32)
    for i in range(6):  # an off-centre rectangle, different per case, same in both channels
        x[i, 6 + i: 20 + i, 10: 34 - i, :] = 1.0
    y = x[..., :1].copy()
    batches = list(tf_dataset_2d(x, y, 6, seed=1, augment=augment, graph=graph).take(3))
    moved = 0
    for a, b in batches:
        a, b = a.numpy(), b.numpy()
        assert set(np.unique(b)) <= {0.0, 1.0}
        for i in range(len(a)):
            ch = a[i, ..., 0]  # contrast/brightness jitter: threshold half-way between background and disc
            img = ch > (ch.min() + ch.max()) / 2 if augment != "flip" else ch > 0.5
            agree = (img == (b[i, ..., 0] > 0.5)).mean()
            assert agree > 0.98, (augment, i, agree)
            moved += int(not any(np.array_equal(img, x[k, ..., 0] > 0.5) for k in range(6)))
    assert moved > 0  # the augmentation did something


def test_no_validation_split_keeps_the_last_epoch(discs: Path, tmp_path: Path) -> None:
    """val_fraction 0 (train on every non-test patient): the full schedule runs and the last epoch is kept."""
    from meddx.infer import load
    from meddx.train.segmentation import train_segmenter

    cfg = TrainConfig(task="segmentation", epochs=3, batch_size=8, learning_rate=1e-2, image_size=32,
                      patience=1, seed=1, val_fraction=0.0, test_fraction=0.2)
    lines: list[str] = []
    info = train_segmenter(discs, tmp_path / "run", cfg, base_filters=4, depth=2, verbose=0, log=lines.append)
    assert info["epochs_run"] == 3 and info["best_epoch"] == 3
    assert info["val_metrics"]["n"] == 0 and info["val_metrics"]["dice"] is None
    assert any("keeping the last epoch" in s for s in lines)
    splits = [r["split"] for r in csv.DictReader((tmp_path / "run" / "splits.csv").open())]
    assert "val" not in splits and "train" in splits and "test" in splits
    run = load(tmp_path / "run")
    assert run.info.kind == "segmenter"


def test_channel_dropout_zeroes_one_whole_channel_and_keeps_the_mask() -> None:
    """channel_dropout p: with probability p exactly one input channel becomes all zeros; the mask and the
    other channels are untouched; p = 0 (and single-channel input) leaves every image as it was."""
    from meddx.train.seg_pipeline import tf_dataset_2d

    x = np.ones((40, 8, 8, 3), np.float32) * np.array([1.0, 2.0, 3.0], np.float32)
    y = np.zeros((40, 8, 8, 1), np.float32)
    y[:, 2:5, 2:5] = 1.0
    a, b = next(iter(tf_dataset_2d(x, y, 40, seed=0, augment="none", channel_dropout=0.9)))
    a, b = a.numpy(), b.numpy()
    assert np.array_equal(b.sum(axis=(1, 2, 3)), np.full(40, 9.0))
    zeroed = (a == 0).all(axis=(1, 2))  # (40, 3): which channels are entirely zero
    assert zeroed.sum(axis=1).max() == 1  # never more than one channel
    assert 25 <= zeroed.any(axis=1).sum() <= 40  # about 90 % of the images lost one
    assert zeroed.any(axis=0).all()  # each channel is the dropped one sometimes
    kept = ~zeroed
    assert np.allclose(a.transpose(0, 3, 1, 2)[kept], (x.transpose(0, 3, 1, 2))[kept])
    a0, _ = next(iter(tf_dataset_2d(x, y, 40, seed=0, augment="none", channel_dropout=0.0)))
    assert np.array_equal(np.sort(a0.numpy(), axis=0), np.sort(x, axis=0))
    a1, _ = next(iter(tf_dataset_2d(x[..., :1], y, 40, seed=0, augment="none", channel_dropout=0.9)))
    assert (a1.numpy() == 1.0).all()
    a2, _ = next(iter(tf_dataset_2d(x, y, 40, seed=0, augment="none", channel_dropout=0.9, graph=False)))
    assert np.array_equal(a2.numpy(), a)  # the numpy twins drop the same channels (same seeded params)


def test_channel_dropout_is_validated() -> None:
    from meddx.errors import ConfigError

    with pytest.raises(ConfigError, match="channel_dropout"):
        TrainConfig(task="segmentation").updated({"channel_dropout": 1.0})
    with pytest.raises(ConfigError, match="segmentation only"):
        TrainConfig().updated({"channel_dropout": 0.5})
    with pytest.raises(ConfigError, match="seg_loss"):
        TrainConfig(task="segmentation").updated({"seg_loss": "focal"})


def test_lesion_fade_cuts_lesion_contrast_and_leaves_the_rest() -> None:
    """lesion_fade: the lesion's mean moves part-way to the ring of tissue around it (by `amount`), its texture
    stays, pixels well away from it and the mask are untouched; a lesion-free image is left as it was."""
    from meddx.train.seg_pipeline import tf_dataset_2d
    from meddx.transforms.augment import LesionFade

    rng = np.random.default_rng(0)
    img = np.zeros((48, 48, 1), np.float32) - 3.0  # background
    img[4:44, 4:44] = rng.normal(0.0, 0.1, (40, 40, 1))  # tissue around 0
    msk = np.zeros((48, 48, 1), np.float32)
    msk[18:30, 18:30] = 1.0
    img[18:30, 18:30] += 2.0  # a lesion 2 above the tissue
    contrast = lambda a: float(a[21:27, 21:27].mean() - a[4:14, 4:44].mean())  # noqa: E731 -- lesion core
    for amount in (0.0, 0.5, 0.9):
        out, kept = LesionFade(amount)(img, msk)
        assert abs(contrast(out) - 2.0 * (1 - amount)) < 0.1, (amount, contrast(out))
        assert np.allclose(out[22:26, 22:26].std(), img[22:26, 22:26].std(), atol=1e-5)  # texture kept
        assert np.array_equal(out[:10], img[:10]) and np.array_equal(kept, msk)  # far from the lesion: unchanged
    assert np.array_equal(LesionFade(0.9)(img, np.zeros_like(msk))[0], img)
    assert np.array_equal(LesionFade(0.9)(img), img)  # no mask: nothing to fade
    x, y = np.repeat(img[None], 40, 0), np.repeat(msk[None], 40, 0)
    for graph in (True, False):
        a, b = next(iter(tf_dataset_2d(x, y, 40, seed=0, augment="none", lesion_fade=0.5, graph=graph)))
        faded = np.array([contrast(s) < 1.95 for s in a.numpy()])
        assert 8 <= faded.sum() <= 32 and np.array_equal(b.numpy(), y)  # about half faded; masks as given
        assert all(2.0 * (1 - 0.9) - 0.1 < contrast(s) < 2.1 for s in a.numpy())  # cut by at most 90 %


def test_lesion_fade_is_validated() -> None:
    from meddx.errors import ConfigError

    with pytest.raises(ConfigError, match="lesion_fade"):
        TrainConfig(task="segmentation").updated({"lesion_fade": 1.5})
    with pytest.raises(ConfigError, match="segmentation only"):
        TrainConfig().updated({"lesion_fade": 0.5})


def test_tversky_loss_weighs_a_missed_lesion_above_a_false_alarm() -> None:
    """Missing 32 lesion pixels costs more than claiming 32 extra ones under both losses, by far more under
    Tversky (beta 0.7 > alpha 0.3: 0.41 vs 0.13 against Dice's 0.33 vs 0.20); both ~0 when right."""
    from meddx.train.config import SEG_LOSSES
    from meddx.models.losses import SEGMENTATION_LOSSES

    assert tuple(SEGMENTATION_LOSSES) == SEG_LOSSES  # the names the config and CLI accept
    truth = np.zeros((1, 16, 16, 1), np.float32)
    truth[0, 4:12, 4:12] = 1.0  # 64 lesion pixels
    logit = lambda m: (m * 2 - 1) * 20.0  # noqa: E731 -- confident logits for a binary map
    missed, extra = truth.copy(), truth.copy()
    missed[0, 4:8, 4:12] = 0.0  # 32 lesion pixels missed
    extra[0, 12:16, 4:12] = 1.0  # 32 background pixels claimed
    dice, tversky = SEGMENTATION_LOSSES["dice_bce"], SEGMENTATION_LOSSES["tversky_bce"]
    for loss in (dice, tversky):
        assert float(loss(truth, logit(truth))) < 0.01
    gap = {name: float(f(truth, logit(missed))) - float(f(truth, logit(extra)))  # the BCE parts cancel
           for name, f in (("dice", dice), ("tversky", tversky))}
    assert 0.10 < gap["dice"] < 0.17 and 0.25 < gap["tversky"] < 0.32, gap


def test_cli_records_segmentation_loss_and_channel_dropout(tmp_path: Path) -> None:
    from meddx.cli import main

    data = make_discs(tmp_path / "small", n_patients=5, per_patient=3, seed=2)
    out = tmp_path / "run"
    rc = main(["train", str(data), "--out", str(out), "--task", "segmentation", "--epochs", "1", "--image-size", "32",
               "--seg-loss", "tversky_bce", "--channel-dropout", "0.3", "--lesion-fade", "0.5",
               "--patch-size", "16"])
    assert rc == 0
    cfg = json.loads((out / "run.json").read_text())["config"]
    assert cfg["seg_loss"] == "tversky_bce" and cfg["channel_dropout"] == 0.3 and cfg["lesion_fade"] == 0.5
    assert cfg["patch_size"] == 16


def test_lesion_dice_leaves_empty_slices_to_cross_entropy() -> None:
    """lesion_dice_bce: 8 false pixels on a lesion-free slice cost their cross-entropy only (per-sample Dice
    would also lose half the batch's Dice term, 1 - (1 + 1/9) / 2); a missed lesion still costs its Dice."""
    from meddx.models.losses import SEGMENTATION_LOSSES

    truth = np.zeros((2, 16, 16, 1), np.float32)
    truth[0, 4:12, 4:12] = 1.0  # sample 0: 64 lesion pixels; sample 1: lesion-free
    logit = lambda m: (m * 2 - 1) * 20.0  # noqa: E731
    bce = lambda pred: float(np.mean(np.abs(truth - pred))) * 20.0  # noqa: E731 -- confidently wrong pixels
    per_sample, lesion_only = SEGMENTATION_LOSSES["dice_bce"], SEGMENTATION_LOSSES["lesion_dice_bce"]
    assert float(lesion_only(truth, logit(truth))) < 0.01 and float(lesion_only(truth * 0, logit(truth * 0))) < 0.01
    extra = truth.copy()
    extra[1, 0:2, 0:4] = 1.0  # 8 false pixels on the empty slice
    assert abs(float(per_sample(truth, logit(extra))) - bce(extra) - (1 - (1 + 1 / 9) / 2)) < 0.01
    assert abs(float(lesion_only(truth, logit(extra))) - bce(extra)) < 0.01
    missed = truth.copy()
    missed[0, 4:8] = 0.0  # half the lesion missed: Dice 2*32 / 96
    assert abs(float(lesion_only(truth, logit(missed))) - bce(missed) - (1 - 65 / 97)) < 0.01


def test_batch_dice_charges_a_false_alarm_by_its_size() -> None:
    """batch_dice_bce: one Dice over the batch's pixels: 8 false pixels on a lesion-free slice next to a 64 px
    lesion cost 1 - (2*64 + 1) / (64 + 72 + 1), not half the batch's Dice term as per-sample Dice charges."""
    from meddx.models.losses import SEGMENTATION_LOSSES

    truth = np.zeros((2, 16, 16, 1), np.float32)
    truth[0, 4:12, 4:12] = 1.0
    logit = lambda m: (m * 2 - 1) * 20.0  # noqa: E731
    bce = lambda pred: float(np.mean(np.abs(truth - pred))) * 20.0  # noqa: E731
    batch, per_sample = SEGMENTATION_LOSSES["batch_dice_bce"], SEGMENTATION_LOSSES["dice_bce"]
    assert float(batch(truth, logit(truth))) < 0.01
    extra = truth.copy()
    extra[1, 0:2, 0:4] = 1.0
    assert abs(float(batch(truth, logit(extra))) - bce(extra) - (1 - 129 / 137)) < 0.01
    assert float(batch(truth, logit(extra))) < float(per_sample(truth, logit(extra))) - 0.3
    missed = truth.copy()
    missed[0, 4:8] = 0.0  # half the lesion missed: Dice 2*32 / 96
    assert abs(float(batch(truth, logit(missed))) - bce(missed) - (1 - 65 / 97)) < 0.01


def test_random_crop_keeps_image_and_mask_aligned_and_finds_the_lesion() -> None:
    """patch_size: every crop is the same window of image and mask; about half of a lesion slice's crops are
    centred on lesion (so hold some), the others fall anywhere (so some of them miss a corner lesion)."""
    from meddx.train.seg_pipeline import CROP_ON_LESION_P, tf_dataset_2d
    from meddx.transforms.augment import RandomCrop

    rng = np.random.default_rng(0)
    img = rng.normal(size=(64, 48, 2)).astype(np.float32)
    msk = np.zeros((64, 48, 1), np.float32)
    msk[56:60, 40:44] = 1  # a small lesion in a corner: a uniformly placed 16x16 crop rarely holds it
    crop = RandomCrop(16, centre_on_mask_p=CROP_ON_LESION_P)

    def window(a: np.ndarray) -> tuple[int, int]:
        hits = [(y, x) for y in range(49) for x in range(33) if np.array_equal(img[y:y + 16, x:x + 16], a)]
        assert len(hits) == 1
        return hits[0]

    held = []
    for _ in range(200):
        a, b = crop(img, msk, rng=rng)
        assert a.shape == (16, 16, 2) and b.shape == (16, 16, 1)
        y, x = window(a)
        assert np.array_equal(msk[y:y + 16, x:x + 16], b)
        held.append(b.sum() > 0)
    assert 0.4 <= np.mean(held) <= 0.75, np.mean(held)
    empty = np.zeros_like(msk)
    assert all(crop(img, empty, rng=rng)[1].sum() == 0 for _ in range(5))
    a, b = next(iter(tf_dataset_2d(np.repeat(img[None], 40, 0), np.repeat(msk[None], 40, 0), 40, seed=0,
                                   augment="none", patch=16)))  # the graph path: same windows, same share
    held = []
    for ai, bi in zip(a.numpy(), b.numpy()):
        y, x = window(ai)
        assert np.array_equal(msk[y:y + 16, x:x + 16], bi)
        held.append(bi.sum() > 0)
    assert 0.3 <= np.mean(held) <= 0.85, np.mean(held)


def test_patch_training_predicts_whole_images(discs: Path, tmp_path: Path) -> None:
    """patch_size: the network trains on crops but the RUN keeps a whole-image model, which evaluate uses."""
    from meddx.app.evaluate import evaluate_segmenter
    from meddx.infer import load
    from meddx.train.segmentation import train_segmenter

    cfg = TrainConfig(task="segmentation", epochs=2, batch_size=8, learning_rate=1e-2, image_size=32,
                      patch_size=16, seed=1, val_fraction=0.2, test_fraction=0.2)
    lines: list[str] = []
    info = train_segmenter(discs, tmp_path / "run", cfg, base_filters=4, depth=2, verbose=0, log=lines.append)
    assert info["input_shape"] == [32, 32, 1] and info["config"]["patch_size"] == 16
    assert any("16x16 crops of the 32x32 images" in s for s in lines)
    run = load(tmp_path / "run")
    assert tuple(run.model.input_shape[1:3]) == (32, 32)
    m = evaluate_segmenter(run, discs, tmp_path / "eval", split="test", log=lambda *a, **k: None)
    assert m["n"] > 0 and 0.0 <= m["dice"] <= 1.0


@pytest.mark.parametrize(("patch", "message"), [(48, "larger than the image size 32"), (18, "multiple of 4")])
def test_patch_size_is_checked_against_the_image(discs: Path, tmp_path: Path, patch: int, message: str) -> None:
    from meddx.errors import ConfigError
    from meddx.train.segmentation import train_segmenter

    cfg = TrainConfig(task="segmentation", epochs=1, image_size=32, patch_size=patch)
    with pytest.raises(ConfigError, match=message):
        train_segmenter(discs, tmp_path / "run", cfg, base_filters=4, depth=2, verbose=0, log=lambda s: None)
    with pytest.raises(ConfigError, match="patch_size"):
        TrainConfig().updated({"patch_size": 64})  # classification has no patches


class _RampModel:
    """A stand-in segmentation model whose output is not flip-symmetric: logit = image * column index."""

    def predict(self, x: np.ndarray, verbose: int = 0) -> np.ndarray:
        ramp = np.arange(x.shape[2], dtype=np.float32)[None, None, :, None]
        return x[..., :1] * ramp / x.shape[2]


def _fake_segmenter(augment: str, tta: bool = True):
    """A 2D whole-image Segmenter around _RampModel, trained (as its RunInfo says) with `--augment augment`."""
    from meddx.infer import Segmenter
    from meddx.io.run_info import RunInfo

    info = RunInfo(kind="segmenter", model="unet", task="binary", class_names=["background", "lesion"],
                   spatial_ndim=2, input_shape=[6, 8, 1], preprocessing={}, config={"augment": augment})
    return Segmenter(info, _RampModel(), None, Path("RUN"), tta=tta)


def test_tta_averages_the_prediction_of_the_flipped_input() -> None:
    """TTA = mean of p(x) and the flip back of p(flip(x)), over the axes the model was trained to flip."""
    x = np.random.default_rng(0).normal(size=(6, 8, 1)).astype(np.float32)
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    plain = sig(_RampModel().predict(x[None])[0, ..., 0])
    lr = sig(_RampModel().predict(x[None, :, ::-1])[0, :, ::-1, 0])
    ud = sig(_RampModel().predict(x[None, ::-1])[0, ::-1, :, 0])
    np.testing.assert_allclose(_fake_segmenter("none", tta=False).model_probability(x), plain, atol=1e-6)
    np.testing.assert_allclose(_fake_segmenter("flip").model_probability(x), (plain + lr) / 2, atol=1e-6)
    # one preset table for every task: light adds an affine to the left-right flip, no up-down flip to average over
    np.testing.assert_allclose(_fake_segmenter("light").model_probability(x), (plain + lr) / 2, atol=1e-6)
    assert not np.allclose(_fake_segmenter("light").model_probability(x), (plain + ud + lr) / 3, atol=1e-6)
    assert not np.allclose(plain, lr)  # the check above can tell TTA from no TTA


def test_tta_is_refused_without_flip_training_and_for_classifiers() -> None:
    from meddx.errors import ConfigError
    from meddx.infer import load

    with pytest.raises(ConfigError, match="--augment none"):  # refused when the segmenter is made
        _fake_segmenter("none")
    with pytest.raises(ConfigError, match="segmentation runs only"):
        load(Path(__file__).resolve().parents[1] / "fixtures" / "runs" / "demo_cls", tta=True)


def test_cli_evaluate_and_predict_with_tta(trained: tuple[Path, dict], discs: Path, tmp_path: Path) -> None:
    from meddx.cli import main

    out, _ = trained
    assert main(["evaluate", str(out), str(discs), "--out", str(tmp_path / "ev"), "--tta"]) == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["tta_flip_axes"] == [1] and m["dice_lesion_cases"] > 0.6
    assert main(["predict", str(out), str(discs / "p1"), "--out", str(tmp_path / "pr"), "--tta"]) == 0
    rows = list(csv.DictReader((tmp_path / "pr" / "predictions.csv").open()))
    assert len(rows) == 6 and sum(int(r["n_lesions"]) > 0 for r in rows) >= 3


def test_report_for_a_segmentation_run(trained: tuple[Path, dict], discs: Path, tmp_path: Path) -> None:
    """`meddx report` with a segmenter: mask-based finding, lesion table with peak probabilities, key image."""
    from meddx.cli import main

    out, _ = trained
    assert main(["report", str(out), str(discs / "p0" / "p0_0.png"), "--out", str(tmp_path / "rep")]) == 0
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "Predicted: lesion" in html and "Segmented lesions" in html and "Peak probability" in html
    assert "Validation Dice (lesion cases)" in html and "Relevance heatmap" not in html
    png = PILImage.open(tmp_path / "rep" / "key_image.png")
    assert png.size[0] >= 500 and (tmp_path / "rep" / "report.pdf").stat().st_size > 1000


def test_segmentation_study_of_a_volume_through_a_2d_model(trained: tuple[Path, dict], discs: Path,
                                                          tmp_path: Path) -> None:
    """A NIfTI stack of disc slices: per-slice probabilities, key slices where the mask is, volume in mL."""
    import nibabel as nib

    from meddx.app.report import _report_info
    from meddx.infer import load
    from meddx.io import read_image
    from meddx.report import render_study_report

    out, _ = trained
    slices = [np.asarray(PILImage.open(discs / "p0" / f"p0_{k}.png"), np.float32) for k in (2, 0, 1)]
    vol = np.stack(slices, axis=-1)  # nibabel order (x, y, z); slice 0 (z) has no disc
    nib.save(nib.Nifti1Image(vol, np.diag([0.5, 0.5, 3.0, 1.0])), str(tmp_path / "stack.nii.gz"))
    run = load(out)
    s = run.predict(read_image(tmp_path / "stack.nii.gz")).to_study(str(tmp_path / "stack.nii.gz"))
    assert np.shape(s["heatmap"]) == (3, SIZE, SIZE) and len(s["slice_scores"]) == 3
    # key slices by lesion area: the two disc slices first (a speck on the blank slice 0 may follow: a full-suite
    # run on the Intel box once left one, a one-slice alarm that --stack-min-fraction exists to drop)
    assert s["predicted"] == "lesion" and set(s["key_slices"][:2]) == {1, 2}
    voxels = sum(int(les["n_px"]) for les in s["lesions"])
    assert voxels == s["n_voxels"] > 0
    assert s["volume_ml"] == pytest.approx(voxels * 0.5 * 0.5 * 3.0 / 1000)
    paths = render_study_report(s, _report_info(run), tmp_path / "rep")  # the run.json dict, as `meddx report`
    html = Path(paths["html"]).read_text()
    assert "Peak lesion probability per slice" in html and "mL in total" in html
    assert (tmp_path / "rep" / "volume_overview.png").is_file()
    # stack post-processing on the volume: components under 0.99 x the largest go, the largest stays
    run.settings.stack_min_fraction = 0.99
    kept = run.predict(read_image(tmp_path / "stack.nii.gz")).to_study(str(tmp_path / "stack.nii.gz"))
    sizes = sorted(int(les["n_px"]) for les in s["lesions"])
    assert [int(les["n_px"]) for les in kept["lesions"]] == sizes[-1:]
    html = Path(render_study_report(kept, _report_info(run), tmp_path / "rep2")["html"]).read_text()
    assert "fewer than 0.99 × the largest" in html, re.findall(r"Lesion pixels[^<]*", html)


def test_slice_stacks_are_told_from_single_images() -> None:
    from types import SimpleNamespace

    from meddx.train.seg_data import is_slice_stacks

    def ds(ids):
        return SimpleNamespace(patient_ids=None if ids is None else np.asarray(ids, dtype=str))

    assert is_slice_stacks(ds(["a"] * 6 + ["b"] * 5))  # MR slices: several per patient
    assert not is_slice_stacks(ds([f"p{i}" for i in range(20)]))  # dermoscopy: one image per patient
    assert not is_slice_stacks(ds(["a"] * 6 + [f"p{i}" for i in range(20)]))  # median, not the largest
    assert not is_slice_stacks(ds(None)) and not is_slice_stacks(ds([]))


def test_slice_stack_recipe_fills_only_the_settings_not_given(tmp_path: Path) -> None:
    from meddx.train.segmentation import train_segmenter

    stacks = make_discs(tmp_path / "stacks", n_patients=5, per_patient=5, seed=4)
    logs: list[str] = []
    run = dict(base_filters=4, depth=2, verbose=0)
    info = train_segmenter(stacks, tmp_path / "a", TrainConfig(task="segmentation", epochs=1, image_size=256),
                           log=logs.append, **run)
    c = info["config"]
    assert (c["batch_size"], c["learning_rate"], c["lesion_fade"], c["stack_min_fraction"], c["patch_size"]) == (
        8, 3e-3, 0.5, 0.25, 128)  # 128 px crops of 256 px slices
    assert c["intensity"] == info["preprocessing"]["intensity"] == "zscore:foreground,channel"
    assert info["input_shape"] == [256, 256, 1] and info["segmentation"]["stack_min_fraction"] == 0.25
    assert any("slice-stack recipe" in line for line in logs)
    # no validation patients: every non-test patient trains, the last epoch is kept
    assert c["val_fraction"] == 0.0 and info["best_epoch"] == info["epochs_run"]
    assert "val" not in (tmp_path / "a" / "splits.csv").read_text()
    assert any("no validation split (val_fraction 0, the slice-stack recipe's)" in line for line in logs)

    given = TrainConfig(task="segmentation", epochs=1, image_size=32, lesion_fade=0.0, batch_size=4,
                        intensity="minmax", stack_min_fraction=0.0, val_fraction=0.2)
    c = train_segmenter(stacks, tmp_path / "b", given, log=lambda s: None, **run)["config"]
    assert (c["batch_size"], c["learning_rate"], c["lesion_fade"], c["stack_min_fraction"], c["patch_size"],
            c["intensity"], c["val_fraction"]) == (4, 3e-3, 0.0, 0.0, 0, "minmax", 0.2)  # what was given wins
    assert ",val" in (tmp_path / "b" / "splits.csv").read_text()

    singles = make_discs(tmp_path / "singles", n_patients=14, per_patient=1, seed=5)
    logs.clear()
    info = train_segmenter(singles, tmp_path / "c", TrainConfig(task="segmentation", epochs=1), log=logs.append, **run)
    c = info["config"]
    assert (c["batch_size"], c["learning_rate"], c["lesion_fade"], c["stack_min_fraction"], c["patch_size"],
            c["val_fraction"]) == (64, 2e-3, 0.0, 0.0, 0, 0.15)  # one image per patient: the image recipe
    assert info["preprocessing"]["intensity"] == "minmax" and info["input_shape"] == [40, 40, 1]
    assert not any("slice-stack recipe" in line for line in logs)
