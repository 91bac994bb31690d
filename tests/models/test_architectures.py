"""Every registry model: builds flat in 2D/3D, right logits shape, CAM layer, finite forward, .keras round trip."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from meddx.models import build_model, find_cam_layer, list_models, load_model  # noqa: E402

# (name, input shape, builder kwargs): small inputs, default architectures unless noted.
CASES = [
    ("cnn", (28, 28, 1), {}),
    ("cnn", (16, 16, 16, 1), {}),
    ("resnet18", (32, 32, 1), {}),
    ("resnet18", (8, 8, 8, 1), {}),
    ("resnet50", (32, 32, 3), {}),
    ("resnet50", (8, 8, 8, 1), {}),
    ("densenet121", (32, 32, 1), {}),
    ("densenet121", (8, 8, 8, 1), {}),
    ("unet", (28, 28, 1), {"depth": 3, "base_filters": 8}),
    ("unet", (12, 12, 12, 1), {"depth": 2, "base_filters": 8, "residual": True}),
    ("app_resnet50", (28, 28, 1), {}),
    ("app_densenet121", (32, 32, 3), {}),
    ("app_efficientnetb0", (32, 32, 1), {}),
    ("app_mobilenetv2", (28, 28, 3), {}),
    ("app_convnext_tiny", (32, 32, 1), {}),
]
HEAVY = {"resnet18", "app_mobilenetv2", "app_densenet121", "densenet121", "resnet50", "app_resnet50", "app_convnext_tiny", "app_efficientnetb0"}
TASKS = [("binary", 2, 1), ("multiclass", 4, 4), ("multilabel", 5, 5)]


def _id(case: tuple) -> str:
    return f"{case[0]}-{len(case[1]) - 1}d"


def _params(cases: list) -> list:
    return [pytest.param(c, id=_id(c), marks=[pytest.mark.slow] if c[0] in HEAVY else []) for c in cases]


def test_cases_cover_registry() -> None:
    from meddx.models import model_spec

    covered = {(name, len(shape) - 1) for name, shape, _ in CASES}
    mine = {"cnn", "resnet18", "resnet50", "densenet121", "unet"} | {n for n in list_models() if n.startswith("app_")}
    expected = {(name, d) for name in mine for d in model_spec(name).dims}
    assert covered == expected


def _build(name: str, shape: tuple, kw: dict, task: str, n: int):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the "resizing to 32 px" note
        return build_model(name, shape, n, task=task, **kw)


def _random(shape: tuple, n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, size=(n, *shape)).astype("float32")


@pytest.mark.parametrize("case", _params(CASES))
def test_model_builds_flat_and_round_trips(case: tuple, tmp_path) -> None:
    name, shape, kw = case
    model = _build(name, shape, kw, "multiclass", 3)
    spatial = shape[:-1]

    # Flat graph, output layer named logits with no activation.
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    out_layer = model.get_layer("logits")
    assert model.outputs[0] is out_layer.output
    assert getattr(out_layer, "activation", keras.activations.linear) is keras.activations.linear
    if name == "unet":
        assert tuple(model.output.shape) == (None, *spatial, 3)
    else:
        assert tuple(model.output.shape) == (None, 3)

    # Grad-CAM target: a spatial (4D/5D) output.
    cam = find_cam_layer(model)
    assert cam == "features"
    assert len(model.get_layer(cam).output.shape) == len(shape) + 1

    # Finite forward pass; logits are not squashed into [0, 1] probabilities.
    x = _random(shape)
    pred = np.asarray(model(x, training=False))
    assert np.all(np.isfinite(pred))
    assert pred.shape == (2, *spatial, 3) if name == "unet" else (2, 3)

    # .keras save / safe load gives identical predictions.
    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(np.asarray(reloaded(x, training=False)), pred, rtol=1e-5, atol=1e-5)
    assert load_model(path).name == model.name


@pytest.mark.parametrize("case", [pytest.param(c, id=_id(c)) for c in CASES if c[0] in HEAVY])
def test_heavy_model_builds_flat(case: tuple) -> None:
    """Fast check for the big models (forward pass and round trip are @slow): flat graph, CAM layer, logits."""
    name, shape, kw = case
    task, n, units = TASKS[len(shape) % 3]
    model = _build(name, shape, kw, task, n)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    assert len(model.get_layer(find_cam_layer(model)).output.shape) == len(shape) + 1
    assert tuple(model.output.shape) == (None, units)


@pytest.mark.parametrize("task,n,units", TASKS)
@pytest.mark.parametrize("case", _params(CASES))
def test_logits_shape_per_task(case: tuple, task: str, n: int, units: int) -> None:
    name, shape, kw = case
    model = _build(name, shape, kw, task, n)
    expected = (None, *shape[:-1], units) if name == "unet" else (None, units)
    assert tuple(model.output.shape) == expected


def test_unet_keeps_odd_spatial_shape() -> None:
    model = build_model("unet", (20, 36, 2), 1, task="binary", depth=3, base_filters=4)
    pred = np.asarray(model(_random((20, 36, 2)), training=False))
    assert pred.shape == (2, 20, 36, 1)
    assert tuple(model.get_layer("pad").output.shape[1:3]) == (24, 40)
    assert tuple(model.get_layer("crop").output.shape[1:3]) == (20, 36)


def test_small_and_large_stems() -> None:
    small = build_model("resnet18", (32, 32, 1), 2, width=8)
    large = build_model("resnet18", (96, 96, 1), 2, width=8)
    assert small.get_layer("features").output.shape[1:3] == (4, 4)   # CIFAR stem: /8
    assert large.get_layer("features").output.shape[1:3] == (3, 3)   # ImageNet stem: /32
    assert "stem_pool" in [layer.name for layer in large.layers]
    assert "stem_pool" not in [layer.name for layer in small.layers]


def test_cnn_strided_stem_for_larger_inputs() -> None:
    assert build_model("cnn", (64, 64, 1), 6, task="multiclass").get_layer("features").output.shape[1:3] == (8, 8)
    assert build_model("cnn", (28, 28, 1), 2).get_layer("features").output.shape[1:3] == (7, 7)


def test_app_resizes_small_inputs_with_a_note() -> None:
    with pytest.warns(UserWarning, match="resizing to 32x32"):
        model = build_model("app_mobilenetv2", (28, 28, 1), 2)
    names = [layer.name for layer in model.layers]
    assert {"gray_to_rgb", "resize_to_min", "imagenet_preprocess"} <= set(names)


def test_find_cam_layer_on_foreign_model() -> None:
    inp = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(4, 3, name="c1")(inp)
    x = keras.layers.Conv2D(4, 3, name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(1)(x)
    assert find_cam_layer(keras.Model(inp, out)) == "c2"


def test_find_cam_layer_prefers_features_and_skips_outputs() -> None:
    from meddx.errors import ConfigError

    inp = keras.Input((16, 16, 1))
    f = keras.layers.Conv2D(4, 3, padding="same", name="features")(inp)
    x = keras.layers.Conv2D(4, 3, padding="same", name="later")(f)
    seg = keras.Model(inp, keras.layers.Conv2D(1, 1, name="logits")(x))  # spatial output: never the target
    assert find_cam_layer(seg) == "features"
    inp = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="c1")(inp)
    assert find_cam_layer(keras.Model(inp, keras.layers.Conv2D(1, 1, name="logits")(x))) == "c1"
    inp = keras.Input((16, 16, 1))
    flat = keras.Model(inp, keras.layers.Dense(1)(keras.layers.Flatten()(inp)), name="flat")
    with pytest.raises(ConfigError, match="'flat' has no layer with a spatial"):
        find_cam_layer(flat)


@pytest.mark.slow
def test_convnext_loads_keras_layout_weights(tmp_path) -> None:
    """The flat ConvNeXt-Tiny reproduces Keras's nested one when given its (legacy .h5) weights."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    ref = keras.applications.ConvNeXtTiny(include_top=False, weights=None, input_shape=(32, 32, 3))
    rng = np.random.default_rng(0)
    for w in ref.weights:
        w.assign(rng.normal(size=w.shape).astype("float32") * 0.05)
    path = tmp_path / "convnext_tiny_notop.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, ref)
    model = build_model("app_convnext_tiny", (32, 32, 3), 2, weights=str(path))
    features = keras.Model(model.input, model.get_layer("features").output)
    x = _random((32, 32, 3))
    np.testing.assert_allclose(np.asarray(features(x)), np.asarray(ref(x * 255.0)), atol=1e-4)
