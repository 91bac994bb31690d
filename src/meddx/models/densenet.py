"""`densenet121`: DenseNet-BC (growth 32, blocks 6-12-24-16, compression 0.5), 2D and 3D.

Small inputs (every side <= 64) get a compact stem (3x3 conv, no pooling) instead of 7x7/2 + pool.
"""

from __future__ import annotations

from typing import Any, Sequence

from meddx.models._blocks import classification_head, finish, image_input, is_small, mark_features, nd


def _bn_relu_conv(x: Any, filters: int, kernel: int, dims: int, name: str) -> Any:
    from keras import layers

    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    x = layers.ReLU(name=f"{name}_relu")(x)
    return nd("Conv", dims)(filters, kernel, padding="same", use_bias=False, kernel_initializer="he_normal",
                            name=f"{name}_conv")(x)


def dense_layer(x: Any, growth: int, dims: int, name: str, bn_size: int = 4) -> Any:
    """BN-ReLU-1x1 conv (bn_size*growth) -> BN-ReLU-3x3 conv (growth), concatenated to the input."""
    from keras import layers

    y = _bn_relu_conv(x, bn_size * growth, 1, dims, f"{name}_1")
    y = _bn_relu_conv(y, growth, 3, dims, f"{name}_2")
    return layers.Concatenate(name=f"{name}_concat")([x, y])


def transition(x: Any, dims: int, name: str, compression: float = 0.5) -> Any:
    """BN-ReLU-1x1 conv (channels * compression) -> 2x average pooling."""
    x = _bn_relu_conv(x, int(x.shape[-1] * compression), 1, dims, name)
    return nd("AveragePooling", dims)(2, padding="same", name=f"{name}_pool")(x)


def build_densenet121(input_shape: tuple[int | None, ...], units: int, dims: int, growth: int = 32,
                      blocks: Sequence[int] = (6, 12, 24, 16), small_stem: bool | None = None,
                      dropout: float = 0.0) -> Any:
    """DenseNet-121-style network (pre-activation dense layers), GAP, Dense logits."""
    from keras import layers

    small = is_small(input_shape) if small_stem is None else small_stem
    inputs = image_input(input_shape)
    if small:
        x = nd("Conv", dims)(2 * growth, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                             name="stem_conv")(inputs)
    else:
        x = nd("Conv", dims)(2 * growth, 7, strides=2, padding="same", use_bias=False,
                             kernel_initializer="he_normal", name="stem_conv")(inputs)
        x = layers.BatchNormalization(momentum=0.9, name="stem_bn")(x)
        x = layers.ReLU(name="stem_relu")(x)
        x = nd("MaxPooling", dims)(3, strides=2, padding="same", name="stem_pool")(x)
    for i, n in enumerate(blocks, start=1):
        for j in range(1, n + 1):
            x = dense_layer(x, growth, dims, name=f"dense{i}_layer{j}")
        if i < len(blocks):
            x = transition(x, dims, name=f"transition{i}")
    x = layers.BatchNormalization(momentum=0.9, name="final_bn")(x)
    x = layers.ReLU(name="final_relu")(x)
    x = mark_features(x)
    return finish(inputs, classification_head(x, units, dims, dropout), name=f"densenet121_{dims}d")
