"""Shared building blocks: layer classes chosen by spatial dims, conv-BN-ReLU units, the logits head.

Keras is imported inside functions so that importing the registry stays cheap.
"""

from __future__ import annotations

from typing import Any

from meddx.errors import ConfigError
from meddx.models.registry import CAM_LAYER, OUTPUT_LAYER


def nd(kind: str, dims: int) -> Any:
    """The Keras layer class `kind` ('Conv', 'MaxPooling', 'ConvTranspose', ...) for 2D or 3D."""
    from keras import layers

    if kind == "ConvTranspose":
        return getattr(layers, f"Conv{dims}DTranspose")
    return getattr(layers, f"{kind}{dims}D")


def image_input(input_shape: tuple[int | None, ...]) -> Any:
    """The model's single input, named 'image'."""
    import keras

    return keras.Input(shape=input_shape, name="image")


def conv_bn_relu(x: Any, filters: int, dims: int, name: str, kernel: int = 3, strides: int = 1,
                 relu_name: str | None = None) -> Any:
    """Conv (no bias) -> BatchNorm -> ReLU, with stable layer names `<name>_conv/_bn/_relu`."""
    from keras import layers

    x = nd("Conv", dims)(filters, kernel, strides=strides, padding="same", use_bias=False,
                         kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return layers.ReLU(name=relu_name or f"{name}_relu")(x)


def mark_features(x: Any) -> Any:
    """Identity layer named 'features' on the last spatial feature map (the Grad-CAM target)."""
    from keras import layers

    return layers.Identity(name=CAM_LAYER)(x)


def classification_head(x: Any, units: int, dims: int, dropout: float = 0.0, pooling: str = "avg") -> Any:
    """Global average ("avg", layer 'gap') or max ("max", layer 'gmp') pooling -> optional dropout -> Dense 'logits'
    (float32, no activation). Max pooling suits small-lesion detection: the logit follows the single most
    lesion-like feature cell, so Grad-CAM peaks on it (average pooling rewards evidence spread over the image)."""
    from keras import layers

    if pooling not in ("avg", "max"):
        raise ConfigError(f"pooling must be 'avg' or 'max', got {pooling!r}")
    if pooling == "max":
        x = nd("GlobalMaxPooling", dims)(name="gmp")(x)
    else:
        x = nd("GlobalAveragePooling", dims)(name="gap")(x)
    if dropout:
        x = layers.Dropout(float(dropout), name="dropout")(x)
    return layers.Dense(units, name=OUTPUT_LAYER, dtype="float32")(x)


def finish(inputs: Any, logits: Any, name: str) -> Any:
    """Wrap into a functional keras.Model."""
    import keras

    return keras.Model(inputs, logits, name=name)


def is_small(input_shape: tuple[int | None, ...], limit: int = 64) -> bool:
    """True when every known spatial size is <= limit (use a CIFAR-style stem without early downsampling)."""
    spatial = [s for s in input_shape[:-1] if s is not None]
    return bool(spatial) and max(spatial) <= limit
