"""`resnet18` / `resnet50`: basic and bottleneck ResNets, 2D and 3D from one builder.

Small inputs (every side <= 64) get a CIFAR-style stem (3x3 conv, no max-pool); larger ones the
ImageNet stem (7x7 stride-2 conv + 3x3 stride-2 max-pool).
"""

from __future__ import annotations

from typing import Any, Sequence

from meddx.models._blocks import (
    classification_head, conv_bn_relu, finish, image_input, is_small, mark_features, nd,
)


def _shortcut(x: Any, filters: int, stride: int, dims: int, name: str) -> Any:
    from keras import layers

    if stride == 1 and x.shape[-1] == filters:
        return x
    x = nd("Conv", dims)(filters, 1, strides=stride, use_bias=False, kernel_initializer="he_normal",
                         name=f"{name}_proj_conv")(x)
    return layers.BatchNormalization(momentum=0.9, name=f"{name}_proj_bn")(x)


def basic_block(x: Any, filters: int, stride: int, dims: int, name: str) -> Any:
    """Two 3x3 convs plus identity/projection shortcut (ResNet-18/34)."""
    from keras import layers

    shortcut = _shortcut(x, filters, stride, dims, name)
    y = conv_bn_relu(x, filters, dims, name=f"{name}_1", strides=stride)
    y = nd("Conv", dims)(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                         name=f"{name}_2_conv")(y)
    y = layers.BatchNormalization(momentum=0.9, gamma_initializer="zeros", name=f"{name}_2_bn")(y)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def bottleneck_block(x: Any, filters: int, stride: int, dims: int, name: str, expansion: int = 4) -> Any:
    """1x1 reduce, 3x3 (strided), 1x1 expand (x4) plus shortcut (ResNet-50)."""
    from keras import layers

    shortcut = _shortcut(x, filters * expansion, stride, dims, name)
    y = conv_bn_relu(x, filters, dims, name=f"{name}_1", kernel=1)
    y = conv_bn_relu(y, filters, dims, name=f"{name}_2", strides=stride)
    y = nd("Conv", dims)(filters * expansion, 1, use_bias=False, kernel_initializer="he_normal",
                         name=f"{name}_3_conv")(y)
    y = layers.BatchNormalization(momentum=0.9, gamma_initializer="zeros", name=f"{name}_3_bn")(y)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def build_resnet(input_shape: tuple[int | None, ...], units: int, dims: int, block: str,
                 stages: Sequence[int], width: int = 64, small_stem: bool | None = None,
                 dropout: float = 0.0, name: str = "resnet") -> Any:
    """Generic ResNet: stem, four stages of `stages[i]` blocks (widths w, 2w, 4w, 8w), GAP, logits."""
    block_fn = basic_block if block == "basic" else bottleneck_block
    small = is_small(input_shape) if small_stem is None else small_stem
    inputs = image_input(input_shape)
    if small:
        x = conv_bn_relu(inputs, width, dims, name="stem")
    else:
        x = conv_bn_relu(inputs, width, dims, name="stem", kernel=7, strides=2)
        x = nd("MaxPooling", dims)(3, strides=2, padding="same", name="stem_pool")(x)
    for s, n_blocks in enumerate(stages, start=1):
        for b in range(1, n_blocks + 1):
            stride = 2 if (b == 1 and s > 1) else 1
            x = block_fn(x, width * 2 ** (s - 1), stride, dims, name=f"stage{s}_block{b}")
    x = mark_features(x)
    return finish(inputs, classification_head(x, units, dims, dropout), name=f"{name}_{dims}d")


def build_resnet18(input_shape: tuple[int | None, ...], units: int, dims: int, **kw: Any) -> Any:
    """ResNet-18."""
    return build_resnet(input_shape, units, dims, "basic", (2, 2, 2, 2), name="resnet18", **kw)


def build_resnet50(input_shape: tuple[int | None, ...], units: int, dims: int, **kw: Any) -> Any:
    """ResNet-50."""
    return build_resnet(input_shape, units, dims, "bottleneck", (3, 4, 6, 3), name="resnet50", **kw)
