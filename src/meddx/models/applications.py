"""Keras Applications backbones (2D only) inside one flat functional graph.

Each backbone is built with `input_tensor=` so its layers join meddx's model directly (no nested
sub-model, so Grad-CAM reaches any layer). The model takes images scaled to [0, 1], grey or RGB:
grey is repeated to 3 channels ('gray_to_rgb'), images smaller than the backbone's minimum (32 px)
are resized up ('resize_to_min'), and the backbone's own ImageNet preprocessing is applied inside
('imagenet_preprocess'). `weights=None` by default;
`weights="imagenet"` downloads (NetworkError when that fails); a local weights file path is accepted.
ConvNeXt-Tiny is re-assembled flat here because Keras builds its stem/downsampling as nested Sequentials.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

from contextlib import contextmanager

from meddx.errors import ConfigError, NetworkError
from meddx.models._blocks import classification_head, finish, image_input, mark_features

MIN_SIZE = 32


def _looks_like_network_error(exc: BaseException) -> bool:
    import urllib.error

    if isinstance(exc, (urllib.error.URLError, ConnectionError, TimeoutError)):
        return True
    text = str(exc)
    return "URL fetch failure" in text or "Failed to download" in text or "Name or service not known" in text


@contextmanager
def _download_errors(name: str) -> Iterator[None]:
    """Turn a failed weights download into one-line NetworkError."""
    try:
        yield
    except Exception as exc:  # Keras's get_file raises a bare `Exception` on URL failures
        if not _looks_like_network_error(exc):
            raise
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise NetworkError(
            f"could not download ImageNet weights for model '{name}' ({detail}); "
            "check the network connection or pass weights=<path to a local weights file>"
        ) from None


def _check_weights(name: str, weights: str | os.PathLike | None) -> str | None:
    if weights is None or weights == "imagenet":
        return weights
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(f"weights for model '{name}' must be None, 'imagenet' or an existing file; "
                          f"not found: {path}")
    return str(path)


def _adapt_input(inputs: Any, input_shape: tuple[int | None, ...], mode: str, name: str) -> Any:
    """Grey -> RGB, resize up to the backbone minimum, ImageNet preprocessing: all weightless layers."""
    from keras import layers

    from meddx.models.custom_layers import ImageNetPreprocess

    x = inputs
    if input_shape[-1] == 1:
        x = layers.Concatenate(axis=-1, name="gray_to_rgb")([x, x, x])
    h, w = input_shape[0], input_shape[1]
    if h is None or w is None:
        pass
    elif h < MIN_SIZE or w < MIN_SIZE:
        target = (max(h, MIN_SIZE), max(w, MIN_SIZE))
        warnings.warn(
            f"model '{name}': input {h}x{w} is below the backbone minimum of {MIN_SIZE} px; "
            f"resizing to {target[0]}x{target[1]} inside the model",
            UserWarning,
            stacklevel=4,
        )
        x = layers.Resizing(target[0], target[1], interpolation="bilinear", name="resize_to_min")(x)
    return ImageNetPreprocess(mode, name="imagenet_preprocess")(x)


def _app_builder(name: str, app_name: str, mode: str) -> Callable[..., Any]:
    def build(input_shape: tuple[int | None, ...], units: int, dims: int,
              weights: str | os.PathLike | None = None, dropout: float = 0.0, trainable: bool = True) -> Any:
        import keras

        weights = _check_weights(name, weights)
        inputs = image_input(input_shape)
        x = _adapt_input(inputs, input_shape, mode, name)
        with _download_errors(name):
            backbone = getattr(keras.applications, app_name)(include_top=False, weights=weights, input_tensor=x)
        if not trainable:
            for layer in backbone.layers:
                layer.trainable = False
        x = mark_features(backbone.output)
        return finish(inputs, classification_head(x, units, dims, dropout), name=name)

    build.__doc__ = f"keras.applications.{app_name} backbone (flat), GAP, Dense logits."
    return build


# Registered in meddx.models.registry as "meddx.models.applications:build_<name>".
build_app_resnet50 = _app_builder("app_resnet50", "ResNet50", "caffe")
build_app_densenet121 = _app_builder("app_densenet121", "DenseNet121", "torch")
build_app_efficientnetb0 = _app_builder("app_efficientnetb0", "EfficientNetB0", "raw")
build_app_mobilenetv2 = _app_builder("app_mobilenetv2", "MobileNetV2", "tf")


# --- ConvNeXt-Tiny, flat -------------------------------------------------------------------------

CONVNEXT_TINY = {"depths": (3, 3, 9, 3), "dims": (96, 192, 384, 768)}


def _convnext_imagenet_path() -> str:
    from keras.src.applications import convnext as kc
    from keras.utils import get_file

    file_name = "convnext_tiny_notop.h5"
    return get_file(file_name, kc.BASE_WEIGHTS_PATH + file_name, cache_subdir="models",
                    file_hash=kc.WEIGHTS_HASHES["convnext_tiny"][1])


def load_h5_weights_in_order(weighted_layers: list[Any], path: str) -> None:
    """Assign a legacy Keras `.h5` weights file's arrays, in saved order, to `weighted_layers`' weights.

    Lets a flat re-assembly load weights saved from Keras's nested-Sequential version.
    """
    import h5py
    import numpy as np

    arrays = []
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        for lname in group.attrs["layer_names"]:
            lg = group[lname.decode() if isinstance(lname, bytes) else lname]
            for wname in lg.attrs["weight_names"]:
                arrays.append(np.asarray(lg[wname.decode() if isinstance(wname, bytes) else wname]))
    targets = [w for layer in weighted_layers for w in layer.weights]
    if len(arrays) != len(targets) or any(tuple(a.shape) != tuple(t.shape) for a, t in zip(arrays, targets)):
        raise ConfigError(f"weights file does not match ConvNeXt-Tiny (no top): {len(arrays)} arrays for "
                          f"{len(targets)} weights", path)
    for t, a in zip(targets, arrays):
        t.assign(a)


def build_convnext_tiny(input_shape: tuple[int | None, ...], units: int, dims: int,
                        weights: str | os.PathLike | None = None, dropout: float = 0.0,
                        layer_scale_init_value: float = 1e-6) -> Any:
    """ConvNeXt-Tiny with Keras's layer names and weight order, built flat (no nested Sequential)."""
    from keras import layers

    from meddx.models.custom_layers import LayerScale

    name = "app_convnext_tiny"
    weights = _check_weights(name, weights)
    prefix = "convnext_tiny"
    inputs = image_input(input_shape)
    x = _adapt_input(inputs, input_shape, "torch", name)
    weighted = []

    def add(layer: Any, t: Any) -> Any:
        weighted.append(layer)
        return layer(t)

    d = CONVNEXT_TINY["dims"]
    x = add(layers.Conv2D(d[0], 4, strides=4, name=f"{prefix}_stem_conv"), x)
    x = add(layers.LayerNormalization(epsilon=1e-6, name=f"{prefix}_stem_layernorm"), x)
    for i, depth in enumerate(CONVNEXT_TINY["depths"]):
        if i > 0:
            x = add(layers.LayerNormalization(epsilon=1e-6, name=f"{prefix}_downsampling_layernorm_{i - 1}"), x)
            x = add(layers.Conv2D(d[i], 2, strides=2, name=f"{prefix}_downsampling_conv_{i - 1}"), x)
        for j in range(depth):
            bn = f"{prefix}_stage_{i}_block_{j}"
            y = add(layers.Conv2D(d[i], 7, padding="same", groups=d[i], name=f"{bn}_depthwise_conv"), x)
            y = add(layers.LayerNormalization(epsilon=1e-6, name=f"{bn}_layernorm"), y)
            y = add(layers.Dense(4 * d[i], name=f"{bn}_pointwise_conv_1"), y)
            y = layers.Activation("gelu", name=f"{bn}_gelu")(y)
            y = add(layers.Dense(d[i], name=f"{bn}_pointwise_conv_2"), y)
            y = add(LayerScale(layer_scale_init_value, d[i], name=f"{bn}_layer_scale"), y)
            x = layers.Add(name=f"{bn}_add")([x, y])
    # Keras's include_top=False ConvNeXt ends with a LayerNormalization (part of the notop weights).
    x = add(layers.LayerNormalization(epsilon=1e-6, name=f"{prefix}_final_layernorm"), x)
    if weights is not None:
        with _download_errors(name):
            path = _convnext_imagenet_path() if weights == "imagenet" else weights
        load_h5_weights_in_order(weighted, path)
    x = mark_features(x)
    return finish(inputs, classification_head(x, units, dims, dropout), name=name)
