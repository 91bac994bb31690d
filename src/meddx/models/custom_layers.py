"""meddx's few custom Keras layers, registered so `.keras` files load with safe_mode=True.

Import this module (or use `meddx.models.load_model`) before loading a saved model that uses them.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
MODES = ("caffe", "torch", "tf", "raw")


@keras.saving.register_keras_serializable(package="meddx")
class ImageNetPreprocess(keras.layers.Layer):
    """Map RGB images in [0, 1] to what a Keras Applications backbone expects (no weights).

    modes: 'caffe' (x*255, RGB->BGR, minus mean; ResNet50), 'torch' ((x - mean)/std; DenseNet,
    ConvNeXt), 'tf' (x*2 - 1; MobileNetV2), 'raw' (x*255; EfficientNet, which normalises inside).
    """

    def __init__(self, mode: str = "torch", **kwargs: Any):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"ImageNetPreprocess mode must be one of {MODES}, got {mode!r}")
        self.mode = mode

    def call(self, x: Any) -> Any:
        x = ops.cast(x, self.compute_dtype)
        if self.mode == "caffe":
            x = ops.flip(x * 255.0, axis=-1)
            return x - ops.convert_to_tensor(CAFFE_MEAN_BGR, dtype=x.dtype)
        if self.mode == "torch":
            mean = ops.convert_to_tensor(IMAGENET_MEAN, dtype=x.dtype)
            std = ops.convert_to_tensor(IMAGENET_STD, dtype=x.dtype)
            return (x - mean) / std
        if self.mode == "tf":
            return x * 2.0 - 1.0
        return x * 255.0

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"mode": self.mode})
        return config


@keras.saving.register_keras_serializable(package="meddx")
class LayerScale(keras.layers.Layer):
    """Per-channel learnable scale (ConvNeXt), a flat-graph stand-in for Keras's private one."""

    def __init__(self, init_values: float = 1e-6, projection_dim: int = 1, **kwargs: Any):
        super().__init__(**kwargs)
        self.init_values = float(init_values)
        self.projection_dim = int(projection_dim)

    def build(self, input_shape: Any) -> None:
        self.gamma = self.add_weight(
            shape=(self.projection_dim,),
            initializer=keras.initializers.Constant(self.init_values),
            trainable=True,
            name="gamma",
        )

    def call(self, x: Any) -> Any:
        return x * ops.cast(self.gamma, x.dtype)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"init_values": self.init_values, "projection_dim": self.projection_dim})
        return config


@keras.saving.register_keras_serializable(package="meddx")
class MemberMean(keras.layers.Layer):
    """Logits of an ensemble's mean probability from its members' logits side by side, (N, K*U) -> (N, U).

    The output, through the usual sigmoid (binary, multilabel) or softmax (multiclass), is the mean of the members'
    probabilities, so everything that reads a classifier's logits reads an ensemble's unchanged."""

    def __init__(self, members: int = 1, task: str = "binary", **kwargs: Any):
        super().__init__(**kwargs)
        if members < 1 or task not in ("binary", "multiclass", "multilabel"):
            raise ValueError(f"MemberMean needs members >= 1 and a classification task, got {members}, {task!r}")
        self.members = int(members)
        self.task = task

    def call(self, z: Any) -> Any:
        z = ops.cast(z, "float32")
        units = z.shape[-1] // self.members
        z = ops.reshape(z, (-1, self.members, units))
        log_k = float(np.log(self.members))
        if self.task == "multiclass":  # log of the mean softmax: softmax of it is that mean
            return ops.logsumexp(ops.log_softmax(z, axis=-1), axis=1) - log_k
        # logit of the mean sigmoid, log(mean p) - log(mean (1 - p)), in log space for stability
        return ops.logsumexp(ops.log_sigmoid(z), axis=1) - ops.logsumexp(ops.log_sigmoid(-z), axis=1)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (*input_shape[:-1], input_shape[-1] // self.members)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"members": self.members, "task": self.task})
        return config


@keras.saving.register_keras_serializable(package="meddx")
class ChannelSlice(keras.layers.Layer):
    """Member `index` of `members` equal channel blocks (last axis): an ensemble member's part of 'features'."""

    def __init__(self, index: int = 0, members: int = 1, **kwargs: Any):
        super().__init__(**kwargs)
        if not 0 <= index < members:
            raise ValueError(f"ChannelSlice index must be in [0, {members}), got {index}")
        self.index = int(index)
        self.members = int(members)

    def call(self, x: Any) -> Any:
        width = x.shape[-1] // self.members
        return x[..., self.index * width:(self.index + 1) * width]

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (*input_shape[:-1], input_shape[-1] // self.members)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"index": self.index, "members": self.members})
        return config
