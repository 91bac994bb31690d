"""TensorFlow runtime set-up shared by training and inference: quiet logs, thread pools, seeds."""

from __future__ import annotations

import os


def configure_tensorflow(threads: int | None = None, seed: int | None = None, inter_op: int | None = None) -> None:
    """Quiet logs, thread pools sized for the machine, and seeds for reproducible runs.

    Inter-op threads default to min(2, cores) (training: 2/2 and 1/2 tied as the fastest on 2 idle cores,
    benchmarks/threads.py); inference passes inter_op=1 (2.4x the batch predict rate and 0.65x the
    one-image latency of 2/2 on the same run). Only the first call in a process takes effect."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow as tf

    try:
        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op or max(1, min(2, os.cpu_count() or 1)))
    except RuntimeError:
        pass  # already initialised in this process
    if seed is not None:
        import keras

        keras.utils.set_random_seed(seed)
