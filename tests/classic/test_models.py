"""Classic baselines on real data: BreastMNIST validation AUC and a MedNIST subset accuracy.

Measured (seed 0, 2-core CPU): see the AUC_FLOOR comment; MedNIST subset (50/class train,
30/class held out, 16 px pixels): svm 0.989, logreg 0.989, dbn 0.961.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from meddx.classic.features import extract_features
from meddx.classic.models import CLASSIC_MODELS, build_classic, load_classic, save_classic
from meddx.errors import ConfigError

# BreastMNIST val AUC measured: svm 0.883, logreg 0.792, dbn 0.811 (handcrafted features)
AUC_FLOOR = {"svm": 0.8, "logreg": 0.7, "dbn": 0.7}
MEDNIST_PER_CLASS = 50


@pytest.fixture(scope="module")
def breast(shared_data):
    path = shared_data / "medmnist" / "breastmnist_trainval.npz"
    if not path.exists():
        pytest.skip(f"real data {path} is absent")
    with np.load(path, allow_pickle=False) as d:
        data = {k: d[k] for k in d.files}
    # features once for all models (the pipelines' own feature step is tested separately)
    data["train_feats"] = extract_features(data["train_images"], progress=False)
    data["val_feats"] = extract_features(data["val_images"], progress=False)
    return data


def test_registry_and_errors():
    assert set(CLASSIC_MODELS) == {"svm", "logreg", "dbn"}
    for name in CLASSIC_MODELS:
        pipe = build_classic(name, feature_mode="pixels")
        assert pipe.steps[0][0] == "features" and pipe.steps[-1][0] == "clf"
        assert pipe.steps[-1][1].class_weight == "balanced"
    with pytest.raises(ConfigError, match="unknown classic model 'rf'"):
        build_classic("rf")
    with pytest.raises(ConfigError, match="unknown feature mode"):
        build_classic("svm", feature_mode="deep")


@pytest.mark.parametrize("name", ["svm", "logreg", "dbn"])
def test_breastmnist_validation_auc(breast, name):
    y_tr, y_va = breast["train_labels"].ravel(), breast["val_labels"].ravel()
    model = build_classic(name, feature_mode="precomputed").fit(breast["train_feats"], y_tr)
    proba = model.predict_proba(breast["val_feats"])
    assert proba.shape == (len(y_va), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    auc = roc_auc_score(y_va, proba[:, 1])
    print(f"BreastMNIST val AUC {name}: {auc:.3f}")
    assert auc > AUC_FLOOR[name]


def test_pipeline_on_raw_images_both_modes_and_joblib_roundtrip(breast, tmp_path):
    x_tr, y_tr = breast["train_images"], breast["train_labels"].ravel()
    x_va, y_va = breast["val_images"], breast["val_labels"].ravel()
    model = build_classic("logreg", feature_mode="both", pixel_size=14).fit(x_tr, y_tr)
    proba = model.predict_proba(x_va)[:, 1]
    auc = roc_auc_score(y_va, proba)
    print(f"BreastMNIST val AUC logreg/both: {auc:.3f}")
    assert auc > 0.7
    path = save_classic(model, tmp_path / "model.joblib")
    again = load_classic(path)
    np.testing.assert_allclose(again.predict_proba(x_va)[:, 1], proba)
    assert [p.name for p in tmp_path.iterdir()] == ["model.joblib"]


def _mednist_subset(root: Path, per_class: int, offset: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from PIL import Image

    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    images, labels = [], []
    for k, c in enumerate(classes):
        files = sorted((root / c).glob("*.jpeg"))[offset:offset + per_class]
        for f in files:
            with Image.open(f) as im:
                images.append(np.asarray(im.convert("L")))
            labels.append(k)
    return np.stack(images), np.asarray(labels), classes


@pytest.mark.parametrize("name", ["svm", "logreg", "dbn"])
def test_mednist_subset_accuracy(shared_data, name):
    root = shared_data / "mednist"
    if not root.is_dir():
        pytest.skip(f"real data {root} is absent")
    x_tr, y_tr, classes = _mednist_subset(root, MEDNIST_PER_CLASS, 0)
    x_te, y_te, _ = _mednist_subset(root, 30, 500)
    assert len(classes) == 6
    model = build_classic(name, feature_mode="pixels", pixel_size=16).fit(x_tr, y_tr)
    proba = model.predict_proba(x_te)
    assert proba.shape == (len(y_te), 6)
    acc = accuracy_score(y_te, model.predict(x_te))
    print(f"MedNIST subset accuracy {name}: {acc:.3f}")
    assert acc > 0.8


def test_volume_input_pixels_mode():
    rng = np.random.default_rng(0)
    x = rng.random((20, 8, 16, 16)).astype(np.float32)
    y = np.repeat([0, 1], 10)
    x[y == 1, 2:6, 4:12, 4:12] += 1.0
    model = build_classic("logreg", feature_mode="pixels", pixel_size=8).fit(x, y)
    assert model.predict_proba(x).shape == (20, 2)
    assert accuracy_score(y, model.predict(x)) == 1.0
