"""Data parallelism over JAX devices for the NumPyro trainer (``train.num_devices``).

One process drives ``N`` devices through a one-axis mesh (axis ``"batch"``): the params,
the optimizer state and the training data are replicated on every device, each step's
minibatch is sharded along the batch axis, and the epoch stays one compiled ``lax.scan``.
XLA partitions the step and inserts the all-reduce of the gradient (the loss is a batch
mean), so every device applies the same update and the params stay replicated.

``train.batch_size`` is the *global* batch: each device takes ``batch_size / N`` rows of
every step (the Pyro backend's ``--num-processes`` takes ``batch_size`` rows per process
instead). JAX's random draws do not depend on how an array is sharded, so a run on ``N``
devices makes the same draws as a run on one device with the same global batch: the two
differ only by the order in which the gradient's partial sums are added.

On CPU, JAX shows one device unless ``XLA_FLAGS=--xla_force_host_platform_device_count=N``
is set before JAX is imported (``ppvae fit --num-devices N`` adds it where it can).
"""

from __future__ import annotations

import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ppvae.errors import UsageError

__all__ = ["AXIS", "DataParallel", "data_parallel"]

#: The mesh axis that minibatches are split along.
AXIS = "batch"
_FLAG = "--xla_force_host_platform_device_count"


def _devices(num_devices: int, device: str) -> list:
    """``num_devices`` devices of the kind that ``train.device`` names, from its index on."""
    if device == "cpu" or device == "auto" and jax.default_backend() == "cpu":
        kind, found, first = "CPU", jax.devices("cpu"), 0
    else:
        try:
            found = jax.devices("gpu")
        except RuntimeError:
            raise UsageError(
                f"--device {device}: JAX sees no GPU here; use --device cpu (with "
                f"XLA_FLAGS={_FLAG}={num_devices}) or install a CUDA build of jaxlib"
            ) from None
        kind, first = "GPU", int(device.split(":")[1]) if ":" in device else 0
    if first + num_devices > len(found):
        fix = (
            f"start with XLA_FLAGS={_FLAG}={num_devices} set in the environment (JAX reads it at import; "
            "ppvae fit --num-devices sets it itself when it can)"
            if kind == "CPU"
            else f"use --num-devices {max(1, len(found) - first)} or fewer"
        )
        raise UsageError(
            f"train.num_devices = {num_devices} but JAX sees {len(found) - first} {kind} device(s) "
            f"from --device {device}; {fix}"
        )
    return list(found[first : first + num_devices])


class DataParallel:
    """The mesh of one data-parallel run and the shardings the trainer places arrays with.

    Parameters
    ----------
    devices : list of jax.Device
        The devices, in mesh order.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> dp = DataParallel(jax.devices("cpu")[:1])
    >>> dp.shard_batches(jnp.zeros((3, 4), jnp.int32)).shape
    (3, 4)
    """

    def __init__(self, devices):
        self.devices = list(devices)
        self.mesh = Mesh(self.devices, (AXIS,))
        #: Whole on every device: params, optimizer state, training data, keys, β.
        self.replicated = NamedSharding(self.mesh, P())
        #: Rows split over the devices: one minibatch ``(B, ...)``.
        self.rows = NamedSharding(self.mesh, P(AXIS))
        #: An epoch's batch indices ``(steps, B)``: every step's batch split over the devices.
        self.steps_rows = NamedSharding(self.mesh, P(None, AXIS))

    @property
    def size(self) -> int:
        return len(self.devices)

    def replicate(self, tree):
        """``tree`` (arrays or ``None``) placed whole on every device."""
        return None if tree is None else jax.device_put(tree, self.replicated)

    def shard_batches(self, batches):
        """An epoch's ``(steps, B)`` batch indices, each step's ``B`` split over the devices."""
        return jax.device_put(batches, self.steps_rows)

    def constrain_batch(self, tree):
        """Inside the compiled step: the minibatch (rows first) split along the batch axis."""
        return None if tree is None else jax.lax.with_sharding_constraint(tree, self.rows)

    def constrain_replicated(self, tree):
        """Inside the compiled step: the updated params and optimizer state kept whole on every device."""
        return jax.lax.with_sharding_constraint(tree, self.replicated)


def data_parallel(num_devices: int, device: str, batch_size: int) -> DataParallel | None:
    """The :class:`DataParallel` for ``train.num_devices`` (``None`` for one device: no mesh).

    Raises
    ------
    UsageError
        If fewer devices are visible than asked for, or ``batch_size`` does not split evenly.
    """
    if num_devices == 1:
        return None
    if batch_size % num_devices:
        lower = batch_size - batch_size % num_devices
        raise UsageError(
            f"train.batch_size = {batch_size} does not split over train.num_devices = {num_devices}: "
            f"it is the global batch, divided evenly among the devices; use --batch-size "
            f"{lower or num_devices} or {lower + num_devices}"
        )
    return DataParallel(_devices(num_devices, device))
