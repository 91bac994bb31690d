"""Sequence classifiers over frame stacks (cine, video, slice series): `lstm`, `gru`, `tcn`, `transformer`, `cnn25d`.

Input (T, H, W, C) per study (T may be None for variable length). A small 2D CNN encodes every
frame (frames folded into the batch axis around individual 2D layers, so the graph stays flat: no
nested keras.Model) and summarised per frame by global average ("avg") or max ("max") pooling of its
feature map (builders' `pooling`; max keeps a small lesion's response, the mean dilutes it); with
`lesion_map=True` the frame features also carry a 1x1-conv lesion-logit channel that `load_frame_encoder`
fills from `pretrain_frame_encoder`'s readout (what makes the heads learn small synthetic lesions);
a temporal head mixes the frame features; attention pooling gives the study-level "logits".

Masking: a frame whose pixels are ALL exactly 0 is padding (what `meddx.data.sequences.pad_sequences`
writes). The mask is computed inside the model ("frame_mask"), so padded frames change nothing:
the RNNs skip them, the TCN (causal, features re-zeroed after every block) and the Transformer
(key mask on attention) never see them, and attention pooling gives them weight 0 exactly.
Per-frame relevance is exposed by the layers "frame_scores" (N, T, 1, pre-softmax) and
"attention" (N, T, softmax over valid frames); `frame_importance(model, x, mask)` returns the latter.

The registry knows these as 3D-input ("classification") models because their input has four
axes; `SEQUENCE_MODELS` / `is_sequence_model` tell them apart. `cnn25d` is the 2.5D baseline
(adjacent frames as channels, fixed T); a 3D CNN comparison is the registry's `cnn` on (D, H, W, C).
Keras is imported at module import here: the registry names these builders lazily
("meddx.models.sequence:build_lstm") and imports this module only to build or load a model.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import keras
import numpy as np
from keras import layers, ops

from meddx.errors import ConfigError
from meddx.models.registry import CAM_LAYER, OUTPUT_LAYER

__all__ = [
    "SEQUENCE_MODELS", "is_sequence_model", "frame_importance", "FrameMask", "ApplyFrameMask",
    "PositionalEncoding", "MaskedSoftmax", "WeightedSum", "AttentionMask", "BoolMask", "FoldTime",
    "UnfoldTime", "SpatialMean", "SpatialMax", "FRAME_POOLINGS", "build_frame_pretrainer", "pretrain_frame_encoder",
    "load_frame_encoder",
]

SEQUENCE_MODELS = ("lstm", "gru", "tcn", "transformer", "cnn25d")
ATTENTION_LAYER = "attention"
FRAME_SCORES_LAYER = "frame_scores"
FRAME_MASK_LAYER = "frame_mask"
FRAME_POOLINGS = ("avg", "max")
LESION_MAP_LAYER = "frame_lesion_map"
# "avg" stays the default: on LGG (large lesions) max + lesion map measured no better (2-fold AUC lstm/tcn/transformer
# 0.69/0.65/0.74 vs avg 0.68/0.73/0.66); on small synthetic lesions max + lesion map is needed (see the tests).
DEFAULT_FRAME_POOLING = "avg"


def is_sequence_model(name: str) -> bool:
    """True for registry names whose input is a frame sequence (T, H, W, C)."""
    return name in SEQUENCE_MODELS


# -- custom layers (registered so .keras files load with safe_mode=True) -------------------------

@keras.saving.register_keras_serializable(package="meddx")
class FrameMask(layers.Layer):
    """(N, T, ...) frames -> (N, T) float mask: 1 where a frame has any non-zero value, 0 for padding."""

    def call(self, x: Any) -> Any:
        nz = ops.not_equal(x, ops.zeros((), dtype=x.dtype))
        axes = tuple(range(2, len(x.shape)))
        return ops.cast(ops.any(nz, axis=axes), "float32")

    def compute_output_shape(self, input_shape: Any) -> Any:
        return tuple(input_shape[:2])


@keras.saving.register_keras_serializable(package="meddx")
class ApplyFrameMask(layers.Layer):
    """[features (N, T, F), mask (N, T)] -> features with padded frames set to 0.

    The layer consumes a Keras mask: the RNN heads' outputs carry the boolean frame mask they were given, and
    this layer applies the same frame mask explicitly (zeros), so it declares masking support and returns no
    output mask (`compute_mask` -> None). Downstream layers take the frame mask as an explicit input, as before;
    without this Keras warns that the layer "will destroy the mask information" on every build and load.
    """

    def call(self, inputs: Any) -> Any:
        h, m = inputs
        return h * ops.cast(m, h.dtype)[..., None]

    def compute_mask(self, inputs: Any, previous_mask: Any = None) -> None:
        return None

    def compute_output_shape(self, input_shape: Any) -> Any:
        return tuple(input_shape[0])


@keras.saving.register_keras_serializable(package="meddx")
class AttentionMask(layers.Layer):
    """(N, T) frame mask -> (N, T, T) boolean attention mask: every query may attend only to valid keys."""

    def call(self, m: Any) -> Any:
        keys = ops.greater(m, 0.5)[:, None, :]                  # (N, 1, T)
        rows = ops.greater(ops.ones_like(m), 0.5)[:, :, None]   # (N, T, 1), all True
        return ops.logical_and(rows, keys)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (input_shape[0], input_shape[1], input_shape[1])


@keras.saving.register_keras_serializable(package="meddx")
class PositionalEncoding(layers.Layer):
    """Adds the fixed sinusoidal encoding (Vaswani et al.) of the frame index to (N, T, D) features."""

    def call(self, x: Any) -> Any:
        t = ops.shape(x)[1]
        d = int(x.shape[-1])
        pos = ops.cast(ops.arange(t), "float32")[:, None]
        i = ops.arange(d)
        rates = ops.exp(-math.log(10000.0) * ops.cast(2 * (i // 2), "float32") / float(d))
        ang = pos * rates[None, :]
        pe = ops.where(ops.equal(i % 2, 0)[None, :], ops.sin(ang), ops.cos(ang))
        return x + ops.cast(pe, x.dtype)[None]

    def compute_output_shape(self, input_shape: Any) -> Any:
        return tuple(input_shape)


@keras.saving.register_keras_serializable(package="meddx")
class MaskedSoftmax(layers.Layer):
    """[scores (N, T, 1), mask (N, T)] -> (N, T) softmax over the valid frames (padded frames get exactly 0)."""

    def call(self, inputs: Any) -> Any:
        s, m = inputs
        s = ops.cast(ops.squeeze(s, axis=-1), "float32")
        valid = ops.greater(ops.cast(m, "float32"), 0.5)
        s = ops.where(valid, s, ops.full_like(s, -1e9))
        s = s - ops.max(s, axis=1, keepdims=True)
        e = ops.exp(s) * ops.cast(valid, "float32")
        return e / ops.maximum(ops.sum(e, axis=1, keepdims=True), 1e-12)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return tuple(input_shape[1])


@keras.saving.register_keras_serializable(package="meddx")
class WeightedSum(layers.Layer):
    """[features (N, T, F), weights (N, T)] -> (N, F) attention-pooled study features."""

    def call(self, inputs: Any) -> Any:
        h, w = inputs
        return ops.sum(h * ops.cast(w, h.dtype)[..., None], axis=1)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (input_shape[0][0], input_shape[0][-1])


@keras.saving.register_keras_serializable(package="meddx")
class BoolMask(layers.Layer):
    """(N, T) float mask -> boolean mask for the RNNs' `mask=` argument."""

    def call(self, m: Any) -> Any:
        return ops.greater(m, 0.5)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return tuple(input_shape)


@keras.saving.register_keras_serializable(package="meddx")
class FoldTime(layers.Layer):
    """(N, T, ...) -> (N*T, ...): frames become a batch for shared 2D layers (works for a dynamic T)."""

    def call(self, x: Any) -> Any:
        return ops.reshape(x, (-1,) + tuple(int(d) for d in x.shape[2:]))

    def compute_output_shape(self, input_shape: Any) -> Any:
        n, t = input_shape[0], input_shape[1]
        return ((n * t) if (n is not None and t is not None) else None,) + tuple(input_shape[2:])


@keras.saving.register_keras_serializable(package="meddx")
class UnfoldTime(layers.Layer):
    """[y (N*T, ...), reference (N, T, ...)] -> (N, T, ...): undo `FoldTime`."""

    def call(self, inputs: Any) -> Any:
        y, ref = inputs
        shp = ops.shape(ref)
        return ops.reshape(y, (shp[0], shp[1]) + tuple(int(d) for d in y.shape[1:]))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return tuple(input_shape[1][:2]) + tuple(input_shape[0][1:])


@keras.saving.register_keras_serializable(package="meddx")
class SpatialMean(layers.Layer):
    """(N, T, h, w, F) -> (N, T, F): global average pooling of every frame's feature map."""

    def call(self, x: Any) -> Any:
        return ops.mean(x, axis=(2, 3))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (input_shape[0], input_shape[1], input_shape[-1])


@keras.saving.register_keras_serializable(package="meddx")
class SpatialMax(layers.Layer):
    """(N, T, h, w, F) -> (N, T, F): global max pooling of every frame's feature map.

    A small lesion lights up a few cells of the map; the max keeps that response whole, the mean
    divides it by the h*w cells (the lesion's evidence sinks under the texture of the rest).
    """

    def call(self, x: Any) -> Any:
        return ops.max(x, axis=(2, 3))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (input_shape[0], input_shape[1], input_shape[-1])


# -- building blocks ----------------------------------------------------------------------------

def _check_shape(input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
    shape = tuple(input_shape)
    if len(shape) != 4:
        raise ValueError(f"sequence models take (T, H, W, C) inputs, got {shape}")
    return shape


def _check_pooling(pooling: str) -> str:
    """Validate the per-frame global pooling name ("avg" or "max")."""
    if pooling not in FRAME_POOLINGS:
        raise ConfigError(f"frame pooling must be one of {FRAME_POOLINGS}, got {pooling!r}")
    return pooling



def _frame_conv_stages(x: Any, filters: Sequence[int]) -> Any:
    """conv-BN-ReLU stages (max-pooled between them) named frame_conv/bn/relu/pool{s}: the per-frame encoder
    and its pretrainer share these names, which is how `load_frame_encoder` copies weights across."""
    for s, f in enumerate(filters, start=1):
        x = layers.Conv2D(f, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                          name=f"frame_conv{s}")(x)
        x = layers.BatchNormalization(name=f"frame_bn{s}")(x)
        x = layers.ReLU(name=f"frame_relu{s}")(x)
        if s < len(filters):
            x = layers.MaxPooling2D(2, padding="same", name=f"frame_pool{s}")(x)
    return x

def _frame_encoder(inputs: Any, filters: Sequence[int], dropout: float, pooling: str = "avg",
                   lesion_map: bool = False) -> Any:
    """Per-frame 2D CNN (conv-BN-ReLU stages, max-pool between) shared over time -> (N, T, F).

    Frames are folded into the batch axis so every layer is an ordinary 2D layer applied to all
    frames at once (Keras 3's TimeDistributed loops over time steps and mishandles a dynamic T).
    `pooling` summarises each frame's feature map: "avg" (layer 'frame_gap') or "max" ('frame_gmp').
    `lesion_map` appends a 1x1-conv lesion-logit channel ('frame_lesion_map') to the last stage's features:
    `load_frame_encoder` fills it from a pretrainer's 'lesion_map', so the head receives the pretrained
    per-frame detector's score (its max, with max pooling) instead of having to rediscover the readout.
    """
    x = FoldTime(name="fold_time")(inputs)
    x = _frame_conv_stages(x, filters)
    if lesion_map:
        score = layers.Conv2D(1, 1, name=LESION_MAP_LAYER)(x)
        x = layers.Concatenate(name="frame_features_and_map")([x, score])
    x = UnfoldTime(name=CAM_LAYER)([x, inputs])  # (N, T, h, w, F): per-frame Grad-CAM target
    x = SpatialMax(name="frame_gmp")(x) if _check_pooling(pooling) == "max" else SpatialMean(name="frame_gap")(x)
    if dropout:
        x = layers.Dropout(dropout, name="frame_dropout")(x)
    return x


def _pool_and_head(h: Any, m: Any, units: int, dropout: float) -> Any:
    """Per-frame scores -> masked softmax 'attention' -> weighted sum -> Dense 'logits'."""
    scores = layers.Dense(1, name=FRAME_SCORES_LAYER)(h)
    w = MaskedSoftmax(name=ATTENTION_LAYER)([scores, m])
    pooled = WeightedSum(name="pooled")([h, w])
    if dropout:
        pooled = layers.Dropout(dropout, name="dropout")(pooled)
    return layers.Dense(units, name=OUTPUT_LAYER, dtype="float32")(pooled)


def _build(input_shape: Sequence[int | None], units: int, head: str, filters: Sequence[int] | None,
           dropout: float, pooling: str = "avg", lesion_map: bool = False, **kw: Any) -> Any:
    shape = _check_shape(input_shape)
    filters = tuple(filters) if filters else (16, 32, 64)
    inputs = keras.Input(shape=shape, name="image")
    m = FrameMask(name=FRAME_MASK_LAYER)(inputs)
    h = _frame_encoder(inputs, filters, dropout, pooling, lesion_map)
    h = ApplyFrameMask(name="frame_features")([h, m])
    if head in ("lstm", "gru"):
        units_rnn = int(kw.get("rnn_units", 32))
        cell = layers.LSTM if head == "lstm" else layers.GRU
        rnn = cell(units_rnn, return_sequences=True, name=f"{head}")
        if kw.get("bidirectional", True):
            rnn = layers.Bidirectional(rnn, name=f"bi{head}")
        h = rnn(h, mask=BoolMask(name="rnn_mask")(m))
        h = ApplyFrameMask(name="temporal_features")([h, m])
    elif head == "tcn":
        ch = int(kw.get("channels", 32))
        k = int(kw.get("kernel_size", 3))
        dilations = tuple(kw.get("dilations", (1, 2, 4)))
        if int(h.shape[-1]) != ch:
            h = layers.Dense(ch, name="tcn_proj")(h)
            h = ApplyFrameMask(name="tcn_proj_mask")([h, m])
        for i, d in enumerate(dilations, start=1):
            r = layers.Conv1D(ch, k, dilation_rate=d, padding="causal", activation="relu", name=f"tcn{i}_conv1")(h)
            r = layers.Dropout(dropout, name=f"tcn{i}_drop")(r) if dropout else r
            r = layers.Conv1D(ch, k, dilation_rate=d, padding="causal", name=f"tcn{i}_conv2")(r)
            h = layers.Add(name=f"tcn{i}_add")([h, r])
            h = layers.ReLU(name=f"tcn{i}_relu")(h)
            h = ApplyFrameMask(name=f"tcn{i}_mask")([h, m])
    elif head == "transformer":
        dm = int(kw.get("d_model", 32))
        heads = int(kw.get("num_heads", 2))
        n_layers = int(kw.get("num_layers", 1))
        h = layers.Dense(dm, name="tf_proj")(h)
        h = PositionalEncoding(name="positional_encoding")(h)
        att_mask = AttentionMask(name="attention_mask")(m)
        for i in range(1, n_layers + 1):
            a = layers.MultiHeadAttention(heads, max(dm // heads, 1), dropout=dropout, name=f"tf{i}_mha")(
                h, h, attention_mask=att_mask)
            h = layers.LayerNormalization(epsilon=1e-6, name=f"tf{i}_ln1")(layers.Add(name=f"tf{i}_add1")([h, a]))
            f = layers.Dense(2 * dm, activation="relu", name=f"tf{i}_ffn1")(h)
            f = layers.Dense(dm, name=f"tf{i}_ffn2")(f)
            h = layers.LayerNormalization(epsilon=1e-6, name=f"tf{i}_ln2")(layers.Add(name=f"tf{i}_add2")([h, f]))
        h = ApplyFrameMask(name="temporal_features")([h, m])
    else:  # pragma: no cover - guarded by the registered builders
        raise ValueError(f"unknown sequence head {head!r}")
    logits = _pool_and_head(h, m, units, dropout)
    return keras.Model(inputs, logits, name=f"seq_{head}")


# -- registered builders (declared in meddx.models.registry) -----------------------------------

def build_lstm(input_shape: tuple[int | None, ...], units: int, dims: int = 3, filters: Sequence[int] | None = None,
               rnn_units: int = 32, bidirectional: bool = True, dropout: float = 0.2,
               pooling: str = DEFAULT_FRAME_POOLING, lesion_map: bool = False) -> Any:
    """Per-frame CNN -> (bi)LSTM over valid frames -> masked attention pooling -> logits.

    `pooling`: how each frame's feature map becomes a vector, "avg" or "max" (see `SpatialMax`);
    `lesion_map`: add the pretrainable lesion-logit channel to the frame features (see `_frame_encoder`)."""
    return _build(input_shape, units, "lstm", filters, dropout, pooling, lesion_map, rnn_units=rnn_units,
                  bidirectional=bidirectional)


def build_gru(input_shape: tuple[int | None, ...], units: int, dims: int = 3, filters: Sequence[int] | None = None,
              rnn_units: int = 32, bidirectional: bool = True, dropout: float = 0.2,
              pooling: str = DEFAULT_FRAME_POOLING, lesion_map: bool = False) -> Any:
    """Per-frame CNN -> (bi)GRU over valid frames -> masked attention pooling -> logits (`pooling`, `lesion_map`:
    as `build_lstm`)."""
    return _build(input_shape, units, "gru", filters, dropout, pooling, lesion_map, rnn_units=rnn_units,
                  bidirectional=bidirectional)


def build_tcn(input_shape: tuple[int | None, ...], units: int, dims: int = 3, filters: Sequence[int] | None = None,
              channels: int = 32, kernel_size: int = 3, dilations: Sequence[int] = (1, 2, 4),
              dropout: float = 0.2, pooling: str = DEFAULT_FRAME_POOLING, lesion_map: bool = False) -> Any:
    """Per-frame CNN -> residual dilated causal Conv1D blocks (padded frames re-zeroed) -> attention pooling
    (`pooling`, `lesion_map`: as `build_lstm`)."""
    return _build(input_shape, units, "tcn", filters, dropout, pooling, lesion_map, channels=channels,
                  kernel_size=kernel_size, dilations=tuple(dilations))


def build_transformer(input_shape: tuple[int | None, ...], units: int, dims: int = 3,
                      filters: Sequence[int] | None = None, d_model: int = 32, num_heads: int = 2,
                      num_layers: int = 1, dropout: float = 0.1, pooling: str = DEFAULT_FRAME_POOLING,
                      lesion_map: bool = False) -> Any:
    """Per-frame CNN -> positional encoding -> masked multi-head self-attention blocks -> attention pooling
    (`pooling`, `lesion_map`: as `build_lstm`)."""
    return _build(input_shape, units, "transformer", filters, dropout, pooling, lesion_map, d_model=d_model,
                  num_heads=num_heads, num_layers=num_layers)


def build_cnn25d(input_shape: tuple[int | None, ...], units: int, dims: int = 3,
                 filters: Sequence[int] | None = None, dropout: float = 0.2) -> Any:
    """Adjacent slices as channels: (T, H, W, C) -> (H, W, T*C) -> conv-BN-ReLU stages -> GAP -> logits."""
    t, hh, ww, c = _check_shape(input_shape)
    if None in (t, hh, ww, c):
        raise ValueError(f"cnn25d needs a fixed (T, H, W, C) input shape, got {tuple(input_shape)}")
    filters = tuple(filters) if filters else (32, 64, 128)
    inputs = keras.Input(shape=(t, hh, ww, c), name="image")
    x = layers.Permute((2, 3, 1, 4), name="slices_last")(inputs)
    x = layers.Reshape((hh, ww, t * c), name="slices_as_channels")(x)
    for s, f in enumerate(filters, start=1):
        x = layers.Conv2D(f, 3, padding="same", use_bias=False, kernel_initializer="he_normal", name=f"conv{s}")(x)
        x = layers.BatchNormalization(name=f"bn{s}")(x)
        x = layers.ReLU(name=f"relu{s}")(x)
        if s < len(filters):
            x = layers.MaxPooling2D(2, padding="same", name=f"pool{s}")(x)
    x = layers.Identity(name=CAM_LAYER)(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    return keras.Model(inputs, layers.Dense(units, name=OUTPUT_LAYER, dtype="float32")(x), name="cnn25d")


# -- per-frame encoder pretraining --------------------------------------------------------------

def _encoder_layer_names(n_stages: int) -> list[str]:
    return [f"frame_{kind}{s}" for s in range(1, n_stages + 1) for kind in ("conv", "bn")]


def build_frame_pretrainer(frame_shape: Sequence[int], filters: Sequence[int] = (16, 32, 64)) -> Any:
    """2D per-slice model whose conv/BN layers carry the sequence encoder's names (`frame_conv{s}`, `frame_bn{s}`)
    plus a 1x1-conv lesion-logit map at the last stage's resolution ("lesion_map").

    Trained on single frames against (downsampled) lesion masks, it teaches the encoder *where* lesion
    pixels are from ~10^4-10^5 labelled pixels instead of one label per study; `load_frame_encoder`
    then copies it into a sequence model by layer name.
    """
    inputs = keras.Input(shape=tuple(frame_shape), name="frame")
    x = inputs
    x = _frame_conv_stages(x, filters)
    out = layers.Conv2D(1, 1, name="lesion_map", dtype="float32")(x)
    return keras.Model(inputs, out, name="frame_pretrainer")


def _downsample_masks(masks: np.ndarray, factor: int) -> np.ndarray:
    """(N, H, W) 0/1 masks -> (N, ceil(H/f), ceil(W/f), 1): a cell is lesion if any pixel in it is."""
    m = np.asarray(masks, dtype=np.float32)
    n, h, w = m.shape
    hp, wp = -(-h // factor) * factor, -(-w // factor) * factor
    m = np.pad(m, ((0, 0), (0, hp - h), (0, wp - w)))
    return m.reshape(n, hp // factor, factor, wp // factor, factor).max(axis=(2, 4))[..., None]


def pretrain_frame_encoder(frames: np.ndarray, masks: np.ndarray, filters: Sequence[int] = (16, 32, 64),
                           epochs: int = 15, learning_rate: float = 3e-3, batch_size: int = 32,
                           seed: int = 0) -> Any:
    """Train `build_frame_pretrainer` on single frames (N, H, W, C) with lesion masks (N, H, W); returns the model.

    Loss: pixel-wise binary cross-entropy on the lesion map, lesion cells up-weighted by the inverse
    lesion fraction (lesions cover a few % of the pixels). Use the TRAINING studies' frames only.
    """
    x = np.asarray(frames, dtype=np.float32)
    if x.ndim == 3:
        x = x[..., None]
    target = _downsample_masks(masks, 2 ** (len(filters) - 1))
    pos = float(np.clip(target.mean(), 1e-3, 0.5))
    weight = np.where(target > 0, 0.5 / pos, 0.5 / (1 - pos)).astype(np.float32)
    keras.utils.set_random_seed(seed)
    model = build_frame_pretrainer(x.shape[1:], filters)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    model.fit(x, target, sample_weight=weight, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
    return model


def load_frame_encoder(model: Any, pretrainer: Any, freeze: bool = True) -> int:
    """Copy the pretrained `frame_conv*`/`frame_bn*` weights into a sequence model (by name), and the pretrainer's
    'lesion_map' into the model's 'frame_lesion_map' when it has one (built with `lesion_map=True`); with
    `freeze` they stop training (frozen BN uses its moving statistics). Returns the number of layers copied."""
    names = {layer.name for layer in pretrainer.layers}
    n_stages = sum(1 for layer in model.layers if layer.name.startswith("frame_conv"))
    pairs = [(name, name) for name in _encoder_layer_names(n_stages)]
    if any(layer.name == LESION_MAP_LAYER for layer in model.layers):
        pairs.append((LESION_MAP_LAYER, "lesion_map"))
    for dst_name, src_name in pairs:
        if src_name not in names:
            raise ValueError(f"pretrained encoder has no layer {src_name!r} (filters differ?)")
        dst = model.get_layer(dst_name)
        dst.set_weights(pretrainer.get_layer(src_name).get_weights())
        dst.trainable = not freeze
    return len(pairs)


# -- explanation --------------------------------------------------------------------------------

def frame_importance(model: Any, x: np.ndarray, mask: np.ndarray | None = None, batch_size: int = 16) -> np.ndarray:
    """(N, T) attention weight of every frame in the study decision (rows sum to 1 over valid frames, 0 on padding).

    `mask` (N, T) marks valid frames (from `pad_sequences`); frames outside it are zeroed before
    the model sees them, so the model's own padding detection agrees with the mask.
    """
    x = np.asarray(x, dtype=np.float32)
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != x.shape[:2]:
            raise ValueError(f"mask shape {mask.shape} does not match the frames' (N, T) = {x.shape[:2]}")
        x = np.where(mask.reshape(mask.shape + (1,) * (x.ndim - 2)), x, 0.0).astype(np.float32)
    try:
        att = model.get_layer(ATTENTION_LAYER)
    except ValueError:
        raise ValueError(f"model '{model.name}' has no '{ATTENTION_LAYER}' layer (not a sequence model)") from None
    probe = keras.Model(model.inputs, att.output)
    w = np.asarray(probe.predict(x, batch_size=batch_size, verbose=0), dtype=np.float64)
    if mask is not None:
        w = w * mask
        w = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
    return w
