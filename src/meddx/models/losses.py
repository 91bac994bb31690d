"""Segmentation losses on logits: soft Dice / Tversky + binary cross-entropy (per sample, lesion-only or per batch).

Plain functions of Keras ops (no custom objects): a RUN keeps a model compiled without them, so it loads with
`safe_mode`.
"""

from __future__ import annotations

from typing import Any, Callable


def _bce_plus_overlap_loss(y_true: Any, y_pred: Any, overlap: Callable[..., Any], lesion_only: bool = False) -> Any:
    """Binary cross-entropy from logits + (1 - per-sample `overlap(p, y_true, axes)`) averaged over the samples,
    or with `lesion_only` over the samples that contain lesion (none: the overlap term is 0)."""
    from keras import ops

    y_true = ops.cast(y_true, "float32")
    bce = ops.mean(ops.binary_crossentropy(y_true, y_pred, from_logits=True))
    axes = tuple(range(1, len(y_pred.shape)))
    miss = 1.0 - overlap(ops.sigmoid(y_pred), y_true, axes)
    if not lesion_only:
        return bce + ops.mean(miss)
    has = ops.cast(ops.sum(y_true, axis=axes) > 0, "float32")
    return bce + ops.sum(miss * has) / ops.maximum(ops.sum(has), 1.0)


def _soft_dice(p: Any, t: Any, axes: tuple[int, ...]) -> Any:
    """Smoothed soft Dice of probabilities `p` and truth `t` over `axes` (1 for two empty maps)."""
    from keras import ops

    return (2.0 * ops.sum(p * t, axis=axes) + 1.0) / (ops.sum(p + t, axis=axes) + 1.0)


def dice_bce_loss(y_true: Any, y_pred: Any) -> Any:
    """Soft Dice (per sample, smoothed) + binary cross-entropy, from logits."""
    return _bce_plus_overlap_loss(y_true, y_pred, _soft_dice)


def lesion_dice_bce_loss(y_true: Any, y_pred: Any) -> Any:
    """Binary cross-entropy on every sample + soft Dice averaged over the samples that contain lesion only.

    A lesion-free slice scores Dice 1 / (1 + sum p) per sample: with mostly empty slices that term outweighs the
    lesions and can collapse training to all-background; here empty slices are taught by cross-entropy alone."""
    return _bce_plus_overlap_loss(y_true, y_pred, _soft_dice, lesion_only=True)


def batch_dice_bce_loss(y_true: Any, y_pred: Any) -> Any:
    """Binary cross-entropy + one soft Dice over all the batch's pixels together (nnU-Net's "batch Dice").

    Per-sample Dice scores a lesion-free crop 1 / (1 + sum p): any probability mass there costs almost the whole
    term, which teaches a network to stay near 0 wherever it is unsure (faint lesions); pooled over the batch a
    false alarm costs in proportion to its size, as in the Dice being measured."""
    from keras import ops

    y_true = ops.cast(y_true, "float32")
    bce = ops.mean(ops.binary_crossentropy(y_true, y_pred, from_logits=True))
    axes = tuple(range(len(y_pred.shape)))
    return bce + 1.0 - _soft_dice(ops.sigmoid(y_pred), y_true, axes)


def tversky_bce_loss(y_true: Any, y_pred: Any, alpha: float = 0.3, beta: float = 0.7) -> Any:
    """Soft Tversky (per sample; beta > alpha weighs missed lesion above false alarm) + binary cross-entropy."""
    from keras import ops

    def tversky(p: Any, t: Any, axes: tuple[int, ...]) -> Any:
        tp = ops.sum(p * t, axis=axes)
        fp = ops.sum(p * (1.0 - t), axis=axes)
        fn = ops.sum((1.0 - p) * t, axis=axes)
        return (tp + 1.0) / (tp + alpha * fp + beta * fn + 1.0)

    return _bce_plus_overlap_loss(y_true, y_pred, tversky)


SEGMENTATION_LOSSES = {"dice_bce": dice_bce_loss, "lesion_dice_bce": lesion_dice_bce_loss,
                       "batch_dice_bce": batch_dice_bce_loss,
                       "tversky_bce": tversky_bce_loss}
