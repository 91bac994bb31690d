"""From a classifier's logits to class probabilities, per output task."""

from __future__ import annotations

import numpy as np


def logits_to_probs(logits: np.ndarray, task: str) -> np.ndarray:
    """(N, K) probabilities for every task (binary gives [1-p, p])."""
    logits = np.asarray(logits, dtype=np.float64)
    if task == "binary":
        p = 1.0 / (1.0 + np.exp(-logits.reshape(-1)))
        return np.stack([1 - p, p], axis=1)
    if task == "multilabel":
        return 1.0 / (1.0 + np.exp(-logits))
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
