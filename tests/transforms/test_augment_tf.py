"""Augmenter inside tf.data via tf.numpy_function (imports TensorFlow: slow to start)."""

from __future__ import annotations

import numpy as np
import pytest

from meddx.transforms.augment import Augmenter


@pytest.mark.slow
def test_as_tf_function_matches_numpy_stream() -> None:
    tf = pytest.importorskip("tensorflow")
    x = np.random.default_rng(0).random((256, 28, 28, 1)).astype(np.float32)
    fn = Augmenter.from_preset("light", 2, seed=4).as_tf_function()
    ds = tf.data.Dataset.from_tensor_slices((x, np.arange(256))).batch(128).map(lambda a, b: (fn(a), b))
    assert ds.element_spec[0].shape.as_list() == [None, 28, 28, 1]
    got = [a.numpy() for a, _ in ds]
    ref = Augmenter.from_preset("light", 2, seed=4)
    np.testing.assert_array_equal(got[0], ref(x[:128]))
    np.testing.assert_array_equal(got[1], ref(x[128:]))
    u8 = tf.data.Dataset.from_tensor_slices((x * 255).astype(np.uint8)).batch(64).map(fn)
    assert next(iter(u8)).dtype == tf.float32
