"""Class-activation heatmaps for 2D (N, H, W, C) and 3D (N, D, H, W, C) classifiers.

Grad-CAM, Grad-CAM++ (gradient methods on the last spatial feature map) and occlusion
(perturbation method, model-agnostic). Models are expected to be flat functional Keras models
that output LOGITS (meddx convention): a binary model has 1 logit whose class-1 score is the
logit and class-0 score its negative; a multiclass model has K logits.

Every method returns float32 numpy heatmaps of shape (N, *spatial) in [0, 1], resized to the
input's spatial shape. TensorFlow/Keras are imported inside the functions.
"""

from __future__ import annotations

import weakref
from typing import Any, Iterator, Sequence

import numpy as np

from meddx.errors import ConfigError, InputError
from meddx.models.layers import find_cam_layer, input_rank, layer_output
from meddx.models.registry import OUTPUT_LAYER

METHODS = ("gradcam", "gradcam++", "occlusion")


# ---------------------------------------------------------------------------------------------
# model helpers
# ---------------------------------------------------------------------------------------------
def _model_spatial_ndim(model: Any) -> int:
    """2 for (N, H, W, C) models, 3 for (N, D, H, W, C) models (ConfigError for anything else)."""
    return input_rank(model) - 2


def _logits_tensor(model: Any) -> Any:
    """The model's logits output (the 'logits' layer's output when there are several outputs)."""
    if len(model.outputs) == 1:
        return model.outputs[0]
    for out in model.outputs:
        if OUTPUT_LAYER in getattr(out, "name", ""):
            return out
    return model.outputs[0]


def _is_nested_model(layer: Any) -> bool:
    import keras

    return isinstance(layer, keras.Model) and hasattr(layer, "_inbound_nodes")


def _find_layer(model: Any, name: str) -> tuple[Any, Any | None]:
    """(outer layer, inner layer or None) for `name`, looking one level into nested sub-models."""
    try:
        return model.get_layer(name), None
    except ValueError:
        pass
    for outer in model.layers:
        if _is_nested_model(outer):
            try:
                return outer, outer.get_layer(name)
            except ValueError:
                continue
    raise ConfigError(f"model '{model.name}' has no layer named '{name}'")


def _check_spatial(model: Any, layer: Any) -> Any:
    out = layer_output(layer)
    rank = _model_spatial_ndim(model) + 2
    if out is None or len(out.shape) != rank:
        shape = None if out is None else tuple(out.shape)
        raise ConfigError(
            f"layer '{layer.name}' of model '{model.name}' has output shape {shape}; Grad-CAM needs a {rank}D feature map"
        )
    return layer


def _resolve_layer(model: Any, layer: Any) -> tuple[Any, Any | None]:
    """(outer layer, inner layer) to explain from None (automatic), a layer name or a layer object.

    The inner layer is set when the feature map lives inside a nested sub-model (e.g. a Keras
    Applications backbone called as a layer); flat models always give (layer, None).
    """
    if layer is None:
        outer, inner = model.get_layer(find_cam_layer(model)), None
    elif isinstance(layer, str):
        outer, inner = _find_layer(model, layer)
    else:
        outer, inner = layer, None
        if not any(l is layer for l in model.layers):
            for cand in model.layers:
                if _is_nested_model(cand) and any(l is layer for l in cand.layers):
                    outer, inner = cand, layer
                    break
    if inner is None and _is_nested_model(outer):
        inner = outer.get_layer(find_cam_layer(outer))
    if inner is not None:
        _check_spatial(outer, inner)
    else:
        _check_spatial(model, outer)
    return outer, inner


def _feature_function(model: Any, layer: Any) -> tuple[Any, str]:
    """A callable x -> (feature map, logits) for the target layer, and the layer's name.

    Flat graphs: one `keras.Model(inputs, [layer.output, logits])`. A feature map inside a nested
    sub-model is reached by chaining (outer prefix) -> (sub-model to its feature map and output)
    -> (outer head), so no 'graph disconnected' error arises.
    """
    import keras

    outer, inner = _resolve_layer(model, layer)
    logits = _logits_tensor(model)
    if inner is None:
        gm = keras.Model(model.inputs[0], [outer.output, logits], name=f"{model.name}_gradcam")
        return (lambda x: gm(x, training=False)), outer.name
    nodes = list(outer._inbound_nodes)
    if len(nodes) != 1 or len(nodes[0].input_tensors) != 1 or len(nodes[0].output_tensors) != 1:
        raise ConfigError(
            f"cannot reach layer '{inner.name}' inside sub-model '{outer.name}' (used {len(nodes)} times); "
            "build the model flat (e.g. Keras Applications with input_tensor=...)"
        )
    in_t, out_t = nodes[0].input_tensors[0], nodes[0].output_tensors[0]
    try:
        sub = keras.Model(outer.inputs[0], [inner.output, outer.outputs[0]])
        pre = None if in_t is model.inputs[0] else keras.Model(model.inputs[0], in_t)
        head = keras.Model(out_t, logits)
    except ValueError as exc:
        raise ConfigError(
            f"cannot split model '{model.name}' around sub-model '{outer.name}' ({exc}); build the model flat"
        ) from None

    def fn(x: Any) -> Any:
        h = x if pre is None else pre(x, training=False)
        feats, sub_out = sub(h, training=False)
        return feats, head(sub_out, training=False)

    return fn, f"{outer.name}/{inner.name}"


def _check_input(model: Any, x: Any) -> tuple[np.ndarray, bool]:
    """Float32 batch for `model`; a single sample without batch axis is accepted (returns squeeze flag)."""
    arr = np.asarray(x, dtype=np.float32)
    want = len(model.inputs[0].shape)
    single = False
    if arr.ndim == want - 1:
        arr, single = arr[None], True
    if arr.ndim != want:
        raise InputError(
            f"input of shape {np.shape(x)} does not fit model '{model.name}' expecting "
            f"{tuple(model.inputs[0].shape)} (batch, spatial..., channels)"
        )
    expected_c = model.inputs[0].shape[-1]
    if expected_c is not None and arr.shape[-1] != expected_c:
        raise InputError(f"input has {arr.shape[-1]} channels; model '{model.name}' expects {expected_c}")
    if arr.shape[0] == 0:
        raise InputError("empty batch: nothing to explain")
    return arr, single


def _class_scores(logits: Any, classes: Any) -> Any:
    """Per-sample score of the explained class: binary 1-logit -> +/- logit, else the class logit."""
    import tensorflow as tf

    logits = tf.reshape(logits, (-1, int(np.prod(logits.shape[1:]))))  # static width, also inside a traced graph
    classes = tf.convert_to_tensor(classes, dtype=tf.int32)
    if logits.shape[-1] == 1:
        sign = tf.where(classes > 0, 1.0, -1.0)
        return logits[:, 0] * tf.cast(sign, logits.dtype)
    return tf.gather(logits, classes, axis=1, batch_dims=1)


def _predicted_classes(logits: np.ndarray) -> np.ndarray:
    """Predicted class per sample from logits (binary 1-logit: logit > 0)."""
    logits = np.asarray(logits).reshape(len(logits), -1)
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).astype(np.int32)
    return np.argmax(logits, axis=1).astype(np.int32)


def _requested_classes(class_index: Any, n: int, n_logits: int) -> np.ndarray | None:
    """Broadcast `class_index` (None, int or per-sample sequence) to (n,) and check its range."""
    if class_index is None:
        return None
    cls = np.asarray(class_index, dtype=np.int64).reshape(-1)
    if cls.size == 1:
        cls = np.full(n, int(cls[0]), dtype=np.int64)
    if cls.size != n:
        raise ConfigError(f"class_index has {cls.size} entries for a batch of {n}")
    n_classes = 2 if n_logits == 1 else n_logits
    if np.any(cls < 0) or np.any(cls >= n_classes):
        raise ConfigError(f"class_index {cls.tolist()} out of range for a model with {n_classes} classes")
    return cls.astype(np.int32)


def _batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, max(1, int(batch_size))):
        yield slice(start, min(n, start + max(1, int(batch_size))))


def _resize_normalise(maps: np.ndarray, spatial: Sequence[int]) -> np.ndarray:
    """ReLU, (bi/tri)linear resize each map to `spatial`, then divide by its max -> [0, 1] float32."""
    from skimage.transform import resize

    spatial = tuple(int(s) for s in spatial)
    out = np.zeros((len(maps), *spatial), dtype=np.float32)
    for i, m in enumerate(maps):
        m = np.maximum(np.nan_to_num(np.asarray(m, dtype=np.float64)), 0.0)
        if m.shape != spatial:
            m = resize(m, spatial, order=1, mode="edge", anti_aliasing=False, preserve_range=True)
        peak = float(m.max()) if m.size else 0.0
        if peak > 0 and np.isfinite(peak):
            out[i] = np.clip(m / peak, 0.0, 1.0)
    return out


# ---------------------------------------------------------------------------------------------
# gradient methods
# ---------------------------------------------------------------------------------------------
_CAM_GRAPHS: "weakref.WeakKeyDictionary[Any, dict[tuple[Any, bool], tuple[Any, str]]]" = weakref.WeakKeyDictionary()


def _cam_graph(model: Any, layer: Any, plus_plus: bool) -> tuple[Any, str]:
    """A traced (once per model, layer and method) function (x, classes) -> raw CAMs at feature resolution.

    A class of -1 means the sample's predicted class. Tracing once instead of running the tape eagerly and
    building the feature model on every call cuts ~20 ms of fixed cost per call (the service calls per
    request batch).
    """
    import tensorflow as tf

    key = (layer if isinstance(layer, (str, type(None))) else id(layer), plus_plus)
    try:
        per_model = _CAM_GRAPHS.setdefault(model, {})
    except TypeError:  # not weak-referenceable: no cache
        per_model = {}
    if key in per_model:
        return per_model[key]
    grad_fn, target_name = _feature_function(model, layer)
    ndim = _model_spatial_ndim(model)
    spatial_axes = tuple(range(1, ndim + 1))
    n_logits = int(np.prod(_logits_tensor(model).shape[1:]))
    in_shape = [None, *model.inputs[0].shape[1:]]

    @tf.function(input_signature=[tf.TensorSpec(in_shape, tf.float32), tf.TensorSpec([None], tf.int32)],
                 reduce_retracing=True)
    def cams(xb: Any, classes: Any) -> tuple[Any, Any]:
        with tf.GradientTape() as tape:
            feats, logits = grad_fn(xb)
            flat = tf.reshape(tf.cast(logits, tf.float32), (-1, n_logits))
            predicted = (tf.cast(flat[:, 0] > 0, tf.int32) if n_logits == 1  # as `_predicted_classes`, in graph
                         else tf.argmax(flat, axis=1, output_type=tf.int32))
            score = _class_scores(flat, tf.where(classes < 0, predicted, classes))
        grads = tape.gradient(score, feats)
        if grads is None:
            return tf.zeros([0]), tf.constant(False)
        feats = tf.cast(feats, tf.float32)
        grads = tf.cast(grads, tf.float32)
        if plus_plus:
            # Grad-CAM++ (Chattopadhyay et al. 2018) with the exp(score) trick: the higher-order
            # derivatives become powers of the first, and exp(score) cancels in the alphas.
            g2, g3 = grads ** 2, grads ** 3
            sum_a = tf.reduce_sum(feats, axis=spatial_axes, keepdims=True)
            denom = 2.0 * g2 + sum_a * g3
            denom = tf.where(tf.abs(denom) > 1e-12, denom, tf.ones_like(denom))
            alphas = g2 / denom
            weights = tf.reduce_sum(alphas * tf.nn.relu(grads), axis=spatial_axes, keepdims=True)
        else:
            weights = tf.reduce_mean(grads, axis=spatial_axes, keepdims=True)
        return tf.nn.relu(tf.reduce_sum(weights * feats, axis=-1)), tf.constant(True)

    per_model[key] = (cams, target_name)
    return cams, target_name


def _gradient_cam(model: Any, x: Any, class_index: Any, layer: Any, batch_size: int, plus_plus: bool) -> np.ndarray:
    import tensorflow as tf

    arr, single = _check_input(model, x)
    ndim = _model_spatial_ndim(model)
    cams, target_name = _cam_graph(model, layer, plus_plus)
    n_logits = int(np.prod(_logits_tensor(model).shape[1:]))
    cls_all = _requested_classes(class_index, len(arr), n_logits)
    if cls_all is None:
        cls_all = np.full(len(arr), -1, dtype=np.int32)
    maps = []
    for sl in _batches(len(arr), batch_size):
        cam, flows = cams(tf.convert_to_tensor(arr[sl]), tf.convert_to_tensor(cls_all[sl]))
        if not bool(flows):
            raise ConfigError(f"no gradient flows from the logits to layer '{target_name}' of model '{model.name}'")
        maps.append(cam.numpy())
    heat = _resize_normalise(np.concatenate(maps, axis=0), arr.shape[1:1 + ndim])
    return heat[0] if single else heat


def grad_cam(model: Any, x: Any, class_index: int | Sequence[int] | None = None, layer: Any = None,
             batch_size: int = 32) -> np.ndarray:
    """Grad-CAM heatmaps (N, *spatial) in [0, 1] for class `class_index` (default: predicted class).

    `layer`: name or layer object of a spatial feature map (default `meddx.models.find_cam_layer(model)`).
    """
    return _gradient_cam(model, x, class_index, layer, batch_size, plus_plus=False)


def grad_cam_plus_plus(model: Any, x: Any, class_index: int | Sequence[int] | None = None, layer: Any = None,
                       batch_size: int = 32) -> np.ndarray:
    """Grad-CAM++ heatmaps (N, *spatial) in [0, 1]: better at several instances of a class than Grad-CAM."""
    return _gradient_cam(model, x, class_index, layer, batch_size, plus_plus=True)


# ---------------------------------------------------------------------------------------------
# occlusion
# ---------------------------------------------------------------------------------------------
def _per_axis(value: int | Sequence[int] | None, spatial: Sequence[int], default: Sequence[int], what: str) -> tuple[int, ...]:
    if value is None:
        return tuple(int(v) for v in default)
    vals = (int(value),) * len(spatial) if np.ndim(value) == 0 else tuple(int(v) for v in value)
    if len(vals) != len(spatial) or any(v < 1 for v in vals):
        raise ConfigError(f"occlusion {what} {value!r} must be a positive int or one per spatial axis {tuple(spatial)}")
    return vals


def _positions(size: int, patch: int, stride: int) -> list[int]:
    """Window starts covering [0, size): regular steps plus a last window flush with the edge."""
    patch = min(patch, size)
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def _blurred(img: np.ndarray, patch: Sequence[int]) -> np.ndarray:
    """The image (spatial..., C) Gaussian-blurred with sigma = half the patch on each spatial axis."""
    from scipy.ndimage import gaussian_filter

    sigma = [p / 2.0 for p in patch] + [0.0]
    return gaussian_filter(img.astype(np.float32), sigma=sigma, mode="nearest")


def occlusion(model: Any, x: Any, class_index: int | Sequence[int] | None = None,
              patch: int | Sequence[int] | None = None, stride: int | Sequence[int] | None = None,
              baseline: float | str = "blur", batch_size: int = 64) -> np.ndarray:
    """Occlusion sensitivity (N, *spatial) in [0, 1]: drop in the class score when a patch is hidden.

    `patch` defaults to 1/8 of each spatial size (at least 2), `stride` to half the patch in 2D and
    the whole patch in 3D; `baseline` fills the hidden patch: "blur" (the image Gaussian-blurred at the
    patch scale: removes small findings without drawing a new flat square that a detector may itself
    read as a lesion), "mean" (the image's per-channel mean), "zero", or a number. Occluded copies are scored in batches of `batch_size`.
    """
    import tensorflow as tf

    arr, single = _check_input(model, x)
    ndim = _model_spatial_ndim(model)
    spatial = arr.shape[1:1 + ndim]
    patch_t = _per_axis(patch, spatial, [max(2, s // 8) for s in spatial], "patch")
    patch_t = tuple(min(p, s) for p, s in zip(patch_t, spatial))
    stride_t = _per_axis(stride, spatial, [max(1, p // 2) if ndim == 2 else p for p in patch_t], "stride")

    @tf.function(reduce_retracing=True)
    def forward(xb: Any) -> Any:
        return model(xb, training=False)

    def scores(batch: np.ndarray, cls_value: int) -> np.ndarray:
        logits = forward(tf.convert_to_tensor(batch))
        cls = np.full(len(batch), cls_value, dtype=np.int32)
        return _class_scores(logits, cls).numpy()

    base_logits = np.concatenate([forward(tf.convert_to_tensor(arr[sl])).numpy() for sl in _batches(len(arr), batch_size)])
    n_logits = int(np.prod(base_logits.shape[1:]))
    cls_all = _requested_classes(class_index, len(arr), n_logits)
    if cls_all is None:
        cls_all = _predicted_classes(base_logits)

    grids = np.meshgrid(*[_positions(s, p, st) for s, p, st in zip(spatial, patch_t, stride_t)], indexing="ij")
    starts = np.stack([g.reshape(-1) for g in grids], axis=1)  # (n_windows, ndim)
    windows = [tuple(slice(int(s), int(s) + p) for s, p in zip(st, patch_t)) for st in starts]

    maps = np.zeros((len(arr), *spatial), dtype=np.float32)
    for i, img in enumerate(arr):
        cls_i = int(cls_all[i])
        ref = float(scores(img[None], cls_i)[0])
        if baseline == "blur":
            fill = _blurred(img, patch_t)
        elif baseline == "mean":
            fill = img.reshape(-1, img.shape[-1]).mean(axis=0)
        elif baseline == "zero":
            fill = np.zeros(img.shape[-1], dtype=np.float32)
        elif isinstance(baseline, (int, float)):
            fill = np.full(img.shape[-1], float(baseline), dtype=np.float32)
        else:
            raise ConfigError(f"occlusion baseline must be 'blur', 'mean', 'zero' or a number, got {baseline!r}")
        fill = np.broadcast_to(fill, img.shape)  # a full image: every baseline is then cut by the window
        total = np.zeros(spatial, dtype=np.float64)
        count = np.zeros(spatial, dtype=np.float64)
        for sl in _batches(len(windows), batch_size):
            chunk = windows[sl]
            batch = np.repeat(img[None], len(chunk), axis=0)
            for j, win in enumerate(chunk):
                batch[(j, *win)] = fill[win]
            drop = ref - scores(batch, cls_i)
            for j, win in enumerate(chunk):
                total[win] += drop[j]
                count[win] += 1.0
        maps[i] = total / np.maximum(count, 1.0)
    heat = _resize_normalise(maps, spatial)
    return heat[0] if single else heat


# ---------------------------------------------------------------------------------------------
# dispatcher
# ---------------------------------------------------------------------------------------------
def explain(model: Any, x: Any, method: str = "gradcam", class_index: int | Sequence[int] | None = None,
            **kw: Any) -> np.ndarray:
    """Heatmaps (N, *spatial) in [0, 1] by `method`: "gradcam", "gradcam++" or "occlusion".

    Extra keywords go to the method (`layer`, `batch_size` for gradient methods; `patch`, `stride`,
    `baseline`, `batch_size` for occlusion).
    """
    key = method.lower().replace("-", "").replace("_", "").replace(" ", "")
    aliases = {"gradcam": "gradcam", "gradcam++": "gradcam++", "gradcamplusplus": "gradcam++",
               "gradcampp": "gradcam++", "occlusion": "occlusion"}
    if key not in aliases:
        raise ConfigError(f"unknown explanation method '{method}'; choose one of: {', '.join(METHODS)}")
    fn = {"gradcam": grad_cam, "gradcam++": grad_cam_plus_plus, "occlusion": occlusion}[aliases[key]]
    try:
        return fn(model, x, class_index=class_index, **kw)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise ConfigError(f"explain method '{method}': {exc}") from None
        raise
