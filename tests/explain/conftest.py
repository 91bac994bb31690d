"""Fixtures for meddx.explain tests: tiny flat Keras models and a blob-localisation toy task."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

IMAGE = 32
BLOB_RADIUS = 3.0


def small_cnn(input_shape: tuple[int, ...], units: int = 1, stride: int = 2, seed: int = 0) -> Any:
    """Conv-BN-ReLU x2 (second strided), GAP, Dense 'logits': a flat functional model, 2D or 3D."""
    import keras

    keras.utils.set_random_seed(seed)
    dims = len(input_shape) - 1
    conv = keras.layers.Conv2D if dims == 2 else keras.layers.Conv3D
    gap = keras.layers.GlobalAveragePooling2D if dims == 2 else keras.layers.GlobalAveragePooling3D
    inp = keras.Input(input_shape)
    x = conv(8, 3, padding="same", use_bias=False, name="conv1")(inp)
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = conv(16, 3, strides=stride, padding="same", use_bias=False, name="conv2")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn2")(x)
    x = keras.layers.ReLU(name="features_relu")(x)
    x = gap(name="gap")(x)
    out = keras.layers.Dense(units, name="logits")(x)
    return keras.Model(inp, out, name=f"small_cnn_{dims}d")


def blob_images(n: int, seed: int, positive_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (n, 32, 32, 1), labels (n,), blob masks (n, 32, 32)).

    Positives carry a Gaussian blob at a random place. Every image (both classes) also carries a
    brighter thin bar at a random place: a distractor that says nothing about the class, so
    "point at the brightest thing" or an untrained network's activations miss often.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:IMAGE, :IMAGE]
    images = rng.normal(0.2, 0.08, size=(n, IMAGE, IMAGE)).astype(np.float32)
    labels = (rng.random(n) < positive_fraction).astype(np.int64)
    masks = np.zeros((n, IMAGE, IMAGE), dtype=bool)
    for i in range(n):
        cy, cx = rng.uniform(6, IMAGE - 6, size=2)
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        while True:  # the bar (1 x 9 px, horizontal or vertical) keeps clear of the blob
            by, bx = rng.integers(2, IMAGE - 11, size=2)
            vertical = bool(rng.integers(2))
            rows = slice(by, by + 9) if vertical else slice(by, by + 1)
            cols = slice(bx, bx + 1) if vertical else slice(bx, bx + 9)
            if labels[i] == 0 or np.min(d2[rows, cols]) > (BLOB_RADIUS + 3) ** 2:
                break
        images[i, rows, cols] += 1.2
        if labels[i] == 0:
            continue
        images[i] += 0.9 * np.exp(-d2 / (2 * 1.6 ** 2))
        masks[i] = d2 <= BLOB_RADIUS ** 2
    return images[..., None], labels, masks


@pytest.fixture(scope="session")
def model_factory() -> Callable[..., Any]:
    return small_cnn


@pytest.fixture(scope="session")
def blob_task() -> dict[str, Any]:
    """A tiny 2D CNN trained for a few epochs (seconds) to detect the blob, plus 20 positive test images."""
    import keras

    x_train, y_train, _ = blob_images(800, seed=1)
    model = small_cnn((IMAGE, IMAGE, 1), units=1, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x_train, y_train.astype("float32"), epochs=5, batch_size=32, verbose=0)
    x_test, y_test, m_test = blob_images(200, seed=2)
    logits = model.predict(x_test, verbose=0)[:, 0]
    accuracy = float(np.mean((logits > 0) == (y_test == 1)))
    pos = np.flatnonzero(y_test == 1)[:20]
    return {"model": model, "accuracy": accuracy, "x": x_test[pos], "masks": m_test[pos],
            "x_neg": x_test[np.flatnonzero(y_test == 0)[:5]]}
