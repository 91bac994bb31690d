"""The RUN fingerprint: training envelope, feature model (flags ~5 % of in-distribution cases, far shifts all),
and what training writes into a RUN."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from meddx.train.fingerprint import (FeatureModel, OOD_FILE, conformal_upper, metadata_fingerprint, read_ood_arrays,
                                     thumbnail)

RUNS = Path(__file__).resolve().parents[1] / "fixtures" / "runs"


def test_metadata_envelope_of_arrays() -> None:
    rng = np.random.default_rng(0)
    items = [rng.integers(10, 200, (28, 28)).astype(np.uint8) for _ in range(5)] + [np.zeros((30, 20), np.uint8)]
    m = metadata_fingerprint(items, spatial_ndim=2)
    assert m["modalities"] == ["OT"] and m["spatial_ndim"] == [2] and m["channels"] == [1]
    assert m["size_min"] == [28, 20] and m["size_max"] == [30, 28]
    assert m["intensity"]["low"] == 0.0 and 190 <= m["intensity"]["high"] <= 200


def test_feature_model_flags_about_five_percent_of_new_in_distribution_cases_and_every_far_one() -> None:
    rng = np.random.default_rng(0)
    d = 16
    means = rng.normal(0, 3, (2, d))

    def draw(n: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y = rng.integers(0, 2, n)
        return means[y] + rng.normal(0, 1, (n, d)) + shift, rng.normal(0, 1, (n, 6)) + shift, y

    e_tr, t_tr, y_tr = draw(2000)
    e_va, t_va, _ = draw(400)
    fm = FeatureModel.fit(e_tr, y_tr, t_tr, e_va, t_va)
    assert (fm.a["val_scores"] > 1).mean() <= 0.05
    e_new, t_new, _ = draw(3000)
    rate = (fm.score(e_new, t_new) > 1).mean()
    assert 0.02 <= rate <= 0.09, rate  # the conformal guarantee: ~5 % on exchangeable new cases
    e_far, t_far, _ = draw(300, shift=4.0)
    assert (fm.score(e_far, t_far) > 1).mean() > 0.95
    # a sample near a class mean in the embedding but unlike the training inputs is caught by the thumbnail view
    odd = fm.score(means[:1] + 0.0, np.full((1, 6), 8.0))
    assert odd[0] > 1


def test_conformal_upper_is_the_finite_sample_quantile() -> None:
    s = np.arange(1, 20, dtype=float)  # 19 scores: ceil(20 * 0.95) = 19th smallest
    assert conformal_upper(s, 0.05) == 19.0
    assert conformal_upper(np.arange(1, 100, dtype=float), 0.05) == 95.0


def test_thumbnail_2d_and_3d() -> None:
    x = np.zeros((3, 16, 16, 2))
    x[:, :8, :8] = 1.0
    t = thumbnail(x)
    assert t.shape == (3, 4 * 4 * 2 + 2)
    assert thumbnail(np.ones((2, 8, 8, 8, 1))).shape == (2, 4 ** 3 + 2)


def test_demo_fixture_has_a_fingerprint_readable_without_pickle() -> None:
    info = json.loads((RUNS / "demo_cls" / "run.json").read_text())
    assert info["fingerprint"]["metadata"]["spatial_ndim"] == [2]
    assert info["fingerprint"]["val_flag_rate"] <= 0.05
    assert info["calibration"]["temperature"] > 0 and "qhat" in info["calibration"]["conformal"]
    arrays = read_ood_arrays(RUNS / "demo_cls")
    assert arrays is not None
    assert {"emb_means", "emb_precision", "thumb_precision", "threshold", "cal_probs"} <= set(arrays)
    assert read_ood_arrays(RUNS / "breast_cls") is None  # trained before fingerprints: none


def test_a_pickled_ood_file_is_refused(tmp_path: Path) -> None:
    from meddx.errors import InputError

    np.save(tmp_path / "x.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with open(tmp_path / "x.npy", "rb") as src, open(tmp_path / OOD_FILE, "wb") as dst:  # not a zip: unreadable
        dst.write(src.read())
    with pytest.raises(InputError):
        read_ood_arrays(tmp_path)


def test_fit_fingerprint_on_a_small_model() -> None:
    """End to end on an untrained 16 px cnn: sections and arrays are complete and numbers only."""
    from meddx.data.datasets import Dataset
    from meddx.models.registry import build_model
    from meddx.train.fingerprint import fit_fingerprint

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (80, 16, 16)).astype(np.uint8)
    labels = rng.integers(0, 2, 80)
    ds = Dataset.from_arrays(imgs, labels, splits=["train"] * 60 + ["val"] * 20)
    model = build_model("cnn", (16, 16, 1), 2, task="binary", filters=(4, 8))
    x = imgs[..., None].astype(np.float32) / 255
    tr, va = np.arange(60), np.arange(60, 80)
    section, calibration, arrays = fit_fingerprint(model, ds, tr, va, x[tr], x[va], "binary")
    assert section["metadata"]["size_min"] == [16, 16] and section["n_val"] == 20
    assert calibration["conformal"]["target"] == 0.9 and calibration["temperature"] > 0
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in map(np.asarray, arrays.values()))
    json.dumps({"f": section, "c": calibration})


def test_record_metadata_reads_files_and_never_raises(tmp_path: Path) -> None:
    from PIL import Image as PILImage

    from meddx.data.datasets import Dataset
    from meddx.train.fingerprint import record_metadata

    paths = []
    for i in range(3):
        p = tmp_path / f"s{i}.png"
        PILImage.fromarray(np.full((40, 50), 30 * i + 10, np.uint8)).save(p)
        paths.append(str(p))
    ds = Dataset(items=paths, labels=np.array([0, 1, 0]), class_names=["a", "b"], task="binary", source="x",
                 kind="folder")
    info: dict = {}
    record_metadata(info, ds, np.arange(3))
    assert info["fingerprint"]["metadata"]["size_min"] == [40, 50] and info["fingerprint"]["feature_model"] is None
    broken = Dataset(items=[str(tmp_path / "missing.png")], labels=np.array([0]), class_names=["a", "b"],
                     task="binary", source="x", kind="folder")
    info = {}
    record_metadata(info, broken, np.arange(1), log=lambda m: None)
    assert "fingerprint" not in info


def test_small_validation_sets_use_a_log_normal_threshold_not_the_maximum() -> None:
    from scipy.stats import norm

    from meddx.train.fingerprint import SMALL_VAL, ood_threshold

    rng = np.random.default_rng(1)
    rates = []
    for _ in range(300):
        s = np.exp(rng.normal(0, 0.5, 39))
        t = ood_threshold(s, 0.04)
        assert t < s.max() * 1.5
        rates.append(1 - norm.cdf(np.log(t) / 0.5))
    assert 0.03 <= float(np.mean(rates)) <= 0.06  # ~4 % on average over calibration draws
    big = np.exp(rng.normal(0, 0.5, SMALL_VAL))
    assert ood_threshold(big, 0.04) == conformal_upper(big, 0.04)
