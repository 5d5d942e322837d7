"""Attaching a class label to the encoder's and the decoder's inputs (JAX).

The same functions as :mod:`ppvae.backends.pyro.conditioning`, so both backends build the
same enlarged inputs and a Pyro run's weights convert unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["one_hot", "attach_label", "append_label"]


def one_hot(y: jax.Array, num_classes: int, dtype) -> jax.Array:
    """Integer labels ``(*lead,)`` as one-hot rows ``(*lead, num_classes)`` of ``dtype``."""
    return jax.nn.one_hot(y, num_classes, dtype=dtype)


def attach_label(x: jax.Array, onehot: jax.Array, event_dims: int, layout: str) -> jax.Array:
    """The encoder's input: ``x`` of shape ``(*lead, *event)`` with its one-hot label attached.

    ``layout="flat"``: ``(*lead, D + C)``; ``layout="channels"``: ``C`` constant image planes
    appended, ``(*lead, C0 + C, H, W)`` (see the Pyro backend's ``attach_label``).
    """
    lead = x.shape[: x.ndim - event_dims]
    onehot = jnp.broadcast_to(onehot, (*lead, onehot.shape[-1]))
    if layout == "flat":
        return jnp.concatenate([x.reshape((*lead, -1)), onehot], axis=-1)
    image = x[..., None, :, :] if event_dims == 2 else x
    planes = jnp.broadcast_to(onehot[..., None, None], (*lead, onehot.shape[-1], *image.shape[-2:]))
    return jnp.concatenate([image, planes], axis=-3)


def append_label(z: jax.Array, onehot: jax.Array) -> jax.Array:
    """The decoder's input: ``concat(z, one_hot(y))``, the one-hot broadcast over particles."""
    return jnp.concatenate([z, jnp.broadcast_to(onehot, (*z.shape[:-1], onehot.shape[-1]))], axis=-1)
