"""`unet`: encoder-decoder segmentation network with skip connections, 2D and 3D.

Outputs per-pixel/voxel logits with `units` channels ('logits'), same spatial shape as the input:
inputs whose sides are not multiples of 2**depth are zero-padded inside the model and the
result cropped back.
"""

from __future__ import annotations

from typing import Any

from meddx.models._blocks import conv_bn_relu, finish, image_input, mark_features, nd
from meddx.models.registry import OUTPUT_LAYER


def conv_unit(x: Any, filters: int, dims: int, name: str, residual: bool = False) -> Any:
    """Two 3x3 conv-BN-ReLU; with `residual` a (projected) shortcut is added before the last ReLU."""
    from keras import layers

    if not residual:
        x = conv_bn_relu(x, filters, dims, name=f"{name}_1")
        return conv_bn_relu(x, filters, dims, name=f"{name}_2")
    shortcut = x
    if x.shape[-1] != filters:
        shortcut = nd("Conv", dims)(filters, 1, use_bias=False, name=f"{name}_proj_conv")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = conv_bn_relu(x, filters, dims, name=f"{name}_1")
    y = nd("Conv", dims)(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                         name=f"{name}_2_conv")(y)
    y = layers.BatchNormalization(name=f"{name}_2_bn")(y)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def build_unet(input_shape: tuple[int | None, ...], units: int, dims: int, depth: int = 4,
               base_filters: int = 32, residual: bool = False, dropout: float = 0.0) -> Any:
    """U-Net with `depth` poolings; filters double per level; transposed-conv upsampling; 1x1 conv logits."""
    from keras import layers

    if depth < 1:
        from meddx.errors import ConfigError

        raise ConfigError(f"unet depth must be >= 1, got {depth}")
    inputs = image_input(input_shape)
    x = inputs
    factor = 2 ** depth
    pads = [0 if s is None else (-s) % factor for s in input_shape[:-1]]
    crop = tuple((p // 2, p - p // 2) for p in pads)
    if any(pads):
        x = nd("ZeroPadding", dims)(padding=crop, name="pad")(x)
    skips = []
    for level in range(depth):
        x = conv_unit(x, base_filters * 2 ** level, dims, name=f"enc{level + 1}", residual=residual)
        skips.append(x)
        x = nd("MaxPooling", dims)(2, name=f"down{level + 1}")(x)
    x = conv_unit(x, base_filters * 2 ** depth, dims, name="bottleneck", residual=residual)
    if dropout:
        x = layers.Dropout(float(dropout), name="bottleneck_dropout")(x)
    for level in reversed(range(depth)):
        f = base_filters * 2 ** level
        x = nd("ConvTranspose", dims)(f, 2, strides=2, padding="same", name=f"up{level + 1}")(x)
        x = layers.Concatenate(name=f"skip{level + 1}")([x, skips[level]])
        x = conv_unit(x, f, dims, name=f"dec{level + 1}", residual=residual)
    if any(pads):
        x = nd("Cropping", dims)(cropping=crop, name="crop")(x)
    x = mark_features(x)
    logits = nd("Conv", dims)(units, 1, name=OUTPUT_LAYER, dtype="float32")(x)
    return finish(inputs, logits, name=f"unet_{dims}d")
