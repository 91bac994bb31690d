"""Grad-CAM / Grad-CAM++ / occlusion: correctness, localisation on a trained toy task, 2D and 3D."""

from __future__ import annotations

import numpy as np
import pytest

from meddx.errors import ConfigError, InputError
from meddx.explain import explain, grad_cam, grad_cam_plus_plus, occlusion, pointing_hits
from meddx.models import find_cam_layer


def _check_heat(heat: np.ndarray, shape: tuple[int, ...]) -> None:
    assert heat.shape == shape
    assert heat.dtype == np.float32
    assert np.all(np.isfinite(heat))
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    for h in heat:
        assert h.max() == pytest.approx(1.0) or h.max() == 0.0


# -- trained 2D toy task: the class is a bright blob at a random place --------------------------
def test_toy_model_learned_the_task(blob_task):
    assert blob_task["accuracy"] >= 0.9, f"toy model accuracy {blob_task['accuracy']:.2f}"


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_gradient_cam_points_at_blob(blob_task, method, record_property):
    heat = explain(blob_task["model"], blob_task["x"], method=method)
    _check_heat(heat, (20, 32, 32))
    rate = float(pointing_hits(heat, blob_task["masks"]).mean())
    record_property(f"pointing_{method}", rate)
    print(f"{method} pointing-game hit rate: {rate:.2f}")
    assert rate >= 0.8, f"{method} peak inside the blob for only {rate:.0%} of positives"


def test_occlusion_points_at_blob(blob_task, record_property):
    heat = occlusion(blob_task["model"], blob_task["x"], patch=4, stride=2)
    _check_heat(heat, (20, 32, 32))
    rate = float(pointing_hits(heat, blob_task["masks"]).mean())
    record_property("pointing_occlusion", rate)
    print(f"occlusion pointing-game hit rate: {rate:.2f}")
    assert rate >= 0.8, f"occlusion peak inside the blob for only {rate:.0%} of positives"


def test_wrong_class_does_not_point_at_blob(blob_task):
    """Class 0 (score = -logit) explains evidence *against* the blob: its peak must lie elsewhere."""
    heat = grad_cam(blob_task["model"], blob_task["x"], class_index=0)
    rate = float(pointing_hits(heat, blob_task["masks"]).mean())
    print(f"class-0 Grad-CAM pointing-game hit rate on positives: {rate:.2f}")
    assert rate <= 0.3


def test_shifted_heatmaps_fail_pointing_game(blob_task):
    """The pointing game is not trivially passed: heatmaps rolled by half the image miss."""
    heat = grad_cam(blob_task["model"], blob_task["x"])
    rolled = np.roll(heat, (16, 16), axis=(1, 2))
    assert pointing_hits(rolled, blob_task["masks"]).mean() <= 0.2
    # ...and "the brightest pixel" misses: every image has a brighter, class-irrelevant bar
    assert pointing_hits(blob_task["x"][..., 0], blob_task["masks"]).mean() <= 0.2


# -- exact maths on small models -----------------------------------------------------------------
def test_gradcam_equals_cam_for_gap_dense(model_factory):
    """With GAP -> Dense, Grad-CAM weights are the dense weights / (H*W): heat = ReLU(sum_k w_k A_k)/max."""
    import keras

    model = model_factory((12, 12, 1), units=3, stride=1)
    x = np.random.default_rng(0).normal(size=(2, 12, 12, 1)).astype(np.float32)
    feats = keras.Model(model.inputs[0], model.get_layer("features_relu").output)(x).numpy()
    w = model.get_layer("logits").get_weights()[0]  # (16, 3)
    heat = grad_cam(model, x, class_index=[2, 0])
    for i, c in enumerate([2, 0]):
        cam = np.maximum(feats[i] @ w[:, c], 0)
        np.testing.assert_allclose(heat[i], cam / cam.max(), atol=1e-5)


def test_binary_class_scores_are_plus_minus_logit(model_factory):
    """1-logit binary model: class 1 uses +logit and class 0 -logit (complementary CAMs)."""
    import keras

    model = model_factory((10, 10, 1), units=1, stride=1, seed=3)
    x = np.random.default_rng(1).normal(size=(1, 10, 10, 1)).astype(np.float32)
    feats = keras.Model(model.inputs[0], model.get_layer("features_relu").output)(x).numpy()[0]
    w = model.get_layer("logits").get_weights()[0][:, 0]
    raw = feats @ w
    for cls, sign in ((1, 1.0), (0, -1.0)):
        heat = grad_cam(model, x, class_index=cls)[0]
        cam = np.maximum(sign * raw, 0)
        np.testing.assert_allclose(heat, cam / cam.max(), atol=1e-5)


def test_default_class_is_prediction(model_factory):
    model = model_factory((16, 16, 1), units=4, seed=5)
    x = np.random.default_rng(2).normal(size=(3, 16, 16, 1)).astype(np.float32)
    pred = np.argmax(model.predict(x, verbose=0), axis=1)
    np.testing.assert_allclose(grad_cam(model, x), grad_cam(model, x, class_index=pred), atol=1e-6)


def test_gradient_graph_is_traced_once_per_model_and_method(model_factory):
    """Batches of any size, explicit or predicted classes: one traced graph per (model, layer, method), reused."""
    from meddx.explain import cam

    model = model_factory((16, 16, 1), units=3, seed=6)
    x = np.random.default_rng(4).normal(size=(5, 16, 16, 1)).astype(np.float32)
    first = grad_cam(model, x[:2])
    grad_cam(model, x, class_index=[0, 1, 2, 0, 1])
    again = grad_cam(model, x[:2])
    graphs = cam._CAM_GRAPHS[model]
    assert len(graphs) == 1
    fn, _ = next(iter(graphs.values()))
    assert fn.experimental_get_tracing_count() == 1
    np.testing.assert_array_equal(first, again)
    grad_cam_plus_plus(model, x[:1])
    assert len(cam._CAM_GRAPHS[model]) == 2


def test_batchnorm_inference_mode_batch_independent(model_factory):
    """BN must run in inference mode: a sample's heatmap does not depend on its batch mates."""
    model = model_factory((16, 16, 1), units=1, seed=4)
    x = np.random.default_rng(3).normal(size=(4, 16, 16, 1)).astype(np.float32)
    full = grad_cam(model, x, class_index=1, batch_size=4)
    alone = grad_cam(model, x[2:3], class_index=1)
    np.testing.assert_allclose(full[2], alone[0], atol=1e-5)
    single = grad_cam(model, x[2], class_index=1)  # no batch axis -> no batch axis back
    assert single.shape == (16, 16)


def test_find_cam_layer_and_named_layer(model_factory):
    model = model_factory((16, 16, 1), units=2)
    assert find_cam_layer(model) == "features_relu"
    heat = grad_cam(model, np.ones((1, 16, 16, 1), np.float32), layer="relu1")
    _check_heat(heat, (1, 16, 16))
    with pytest.raises(ConfigError, match="no layer named"):
        grad_cam(model, np.ones((1, 16, 16, 1), np.float32), layer="nope")
    with pytest.raises(ConfigError, match="feature map"):
        grad_cam(model, np.ones((1, 16, 16, 1), np.float32), layer="gap")
    with pytest.raises(ConfigError, match="out of range"):
        grad_cam(model, np.ones((1, 16, 16, 1), np.float32), class_index=2)
    with pytest.raises(InputError):
        grad_cam(model, np.ones((1, 16, 16, 3), np.float32))
    with pytest.raises(ConfigError, match="unknown explanation method"):
        explain(model, np.ones((1, 16, 16, 1), np.float32), method="lime")


# -- 3D ------------------------------------------------------------------------------------------
def _bright_spot_model_3d(shape: tuple[int, int, int]):
    """A 3D model whose evidence is brightness above 0.5 (fixed weights, no training), with BN."""
    import keras

    inp = keras.Input((*shape, 1))
    x = keras.layers.Conv3D(1, 1, strides=2, name="conv")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling3D()(x)
    out = keras.layers.Dense(1, name="logits")(x)
    model = keras.Model(inp, out)
    model.get_layer("conv").set_weights([np.ones((1, 1, 1, 1, 1), np.float32), np.array([-0.5], np.float32)])
    model.get_layer("logits").set_weights([np.ones((1, 1), np.float32), np.array([0.1], np.float32)])
    return model


def _spot_volumes(n: int, shape: tuple[int, int, int], seed: int):
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape)
    vols = rng.uniform(0, 0.3, size=(n, *shape)).astype(np.float32)
    masks = np.zeros((n, *shape), bool)
    for i in range(n):
        c = rng.uniform(3, np.array(shape) - 3)
        d2 = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2
        vols[i] += np.exp(-d2 / 4.0).astype(np.float32)
        masks[i] = d2 <= 2.5 ** 2
    return vols[..., None], masks


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "occlusion"])
def test_3d_localises_bright_spot(method):
    shape = (12, 16, 16)
    model = _bright_spot_model_3d(shape)
    x, masks = _spot_volumes(4, shape, seed=7)
    kw = {"patch": 3, "stride": 2} if method == "occlusion" else {}
    heat = explain(model, x, method=method, **kw)
    _check_heat(heat, (4, *shape))
    assert pointing_hits(heat, masks, tolerance_px=1.0).all()


def test_3d_small_cnn_all_methods(model_factory):
    model = model_factory((8, 12, 12, 1), units=3)
    x = np.random.default_rng(4).normal(size=(2, 8, 12, 12, 1)).astype(np.float32)
    assert find_cam_layer(model) == "features_relu"
    for method in ("gradcam", "gradcam++", "occlusion"):
        _check_heat(explain(model, x, method=method), (2, 8, 12, 12))


# -- Keras Applications backbones -------------------------------------------------------------------
def _applications_model(name: str, nested: bool = False):
    import keras

    app = getattr(keras.applications, name)
    inp = keras.Input((32, 32, 3))
    if nested:
        base = app(input_shape=(32, 32, 3), weights=None, include_top=False)
        feats = base(inp)
    else:
        base = app(input_tensor=inp, weights=None, include_top=False)
        feats = base.output
    x = keras.layers.GlobalAveragePooling2D()(feats)
    out = keras.layers.Dense(2, name="logits")(x)
    return keras.Model(inp, out)


@pytest.mark.parametrize("name,layer", [("MobileNetV2", "out_relu"), ("ResNet50", "conv5_block3_out")])
def test_keras_applications_flat(name, layer):
    model = _applications_model(name)
    assert find_cam_layer(model) == layer
    x = np.random.default_rng(5).uniform(0, 1, size=(2, 32, 32, 3)).astype(np.float32)
    _check_heat(grad_cam(model, x), (2, 32, 32))
    # an earlier, larger feature map gives a non-constant heatmap
    early = "block_6_expand_relu" if name == "MobileNetV2" else "conv3_block4_out"
    heat = grad_cam_plus_plus(model, x, layer=early)
    _check_heat(heat, (2, 32, 32))


def test_keras_applications_nested_backbone():
    """A backbone called as a sub-model (not flat) still works: the graph is split around it."""
    model = _applications_model("MobileNetV2", nested=True)
    x = np.random.default_rng(6).uniform(0, 1, size=(1, 32, 32, 3)).astype(np.float32)
    _check_heat(grad_cam(model, x), (1, 32, 32))
    _check_heat(grad_cam(model, x, layer="block_6_expand_relu"), (1, 32, 32))
