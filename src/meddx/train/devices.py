"""Data-parallel training over several devices (`meddx train --devices N|all`): a `tf.distribute.MirroredStrategy`
over the visible GPUs, or, on a machine without one, over N logical CPU devices (to test the multi-device path).

`--batch-size` stays the batch each device sees; the global batch is N times it and the learning rate is scaled
linearly with it (Goyal et al. 2017), so an epoch is the same number of passes over the data in 1/N of the steps.
Logical CPU devices must be declared before TensorFlow initialises its devices: `make_strategy` is called first
thing in training. Multi-worker training (MultiWorkerMirroredStrategy) does not work with Keras 3 `fit`
(keras-team/keras#20585), so it is not offered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from meddx.errors import ConfigError

LOGGER = logging.getLogger(__name__)


@dataclass
class Distribution:
    """The strategy training runs under (None: one device, no strategy) and what run.json records of it."""

    strategy: Any = None
    replicas: int = 1
    device_type: str = "default"
    devices: list[str] = field(default_factory=list)

    def scope(self) -> Any:
        """The strategy's scope (models and optimisers built inside are mirrored), or a no-op context."""
        if self.strategy is None:
            from contextlib import nullcontext

            return nullcontext()
        return self.strategy.scope()

    def record(self, batch_size: int, learning_rate: float) -> dict[str, Any]:
        """What run.json says of the distribution."""
        return {"strategy": "MirroredStrategy" if self.strategy is not None else "default",
                "replicas": self.replicas, "device_type": self.device_type, "devices": list(self.devices),
                "per_replica_batch": int(batch_size), "global_batch": int(batch_size) * self.replicas,
                "learning_rate": float(learning_rate) * self.replicas,
                "learning_rate_scaling": "linear in replicas"}


def parse_devices(devices: str | int | None) -> int | str | None:
    """None (one device), 'all', or a device count >= 1 from `--devices`."""
    if devices is None:
        return None
    text = str(devices).strip().lower()
    if text == "all":
        return "all"
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1 or str(n) != text:
        raise ConfigError(f"--devices must be a number of devices >= 1 or 'all', got {devices!r}")
    return n


def make_strategy(devices: str | int | None) -> Distribution:
    """A MirroredStrategy over the requested GPUs, or N logical CPU devices when the machine has no GPU; call it
    before anything else touches TensorFlow's devices."""
    wanted = parse_devices(devices)
    if wanted is None:
        return Distribution()
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        n = len(gpus) if wanted == "all" else wanted
        if n > len(gpus):
            raise ConfigError(f"--devices {n}: this machine has {len(gpus)} GPU(s)")
        names = [f"/gpu:{i}" for i in range(n)]
        strategy = tf.distribute.MirroredStrategy(devices=names)
        return Distribution(strategy, strategy.num_replicas_in_sync, "GPU", names)
    if wanted == "all":
        LOGGER.warning("--devices all: no GPU found; training on one CPU device")
        return Distribution()
    n = int(wanted)
    _logical_cpus(tf, n)
    names = [f"/cpu:{i}" for i in range(n)]
    # CPUs have no NCCL: gradients are summed on one device (the only cross-device op that works here)
    strategy = tf.distribute.MirroredStrategy(devices=names, cross_device_ops=tf.distribute.ReductionToOneDevice())
    LOGGER.info("no GPU: training over %d logical CPU devices (tests the multi-device path; no faster than one)", n)
    return Distribution(strategy, strategy.num_replicas_in_sync, "CPU (logical)", names)


def _logical_cpus(tf: Any, n: int) -> None:
    """Split the CPU into `n` logical devices (must happen before TensorFlow initialises its devices)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have < n:
            raise ConfigError(f"--devices {n}: TensorFlow was already started in this process with {have} CPU "
                              "device(s); run training in a new process") from None
