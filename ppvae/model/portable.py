"""Priors and likelihoods written once, for every backend.

A portable component declares its learnable parameters and constants as numpy arrays
and builds its distribution from the backend's own distributions module, which Pyro and
NumPyro keep name-for-name compatible. Each backend wraps it in its native module
(``torch.nn.Module`` with parameters and buffers; an Equinox module for NumPyro), so one
definition trains on both.

Examples
--------
>>> import numpy as np
>>> import ppvae
>>> @ppvae.register("prior", "learned_laplace")
... class LearnedLaplace(ppvae.Portable):
...     '''Laplace(0, b) on every latent dimension, with b learned.'''
...     def __init__(self, latent_dim, scale=1.0):
...         self.param("log_scale", np.full(latent_dim, np.log(scale)))
...         self.constant("loc", np.zeros(latent_dim))
...     def distribution(self, dist, ops, p):
...         return dist.Laplace(p["loc"], ops.exp(p["log_scale"])).to_event(1)
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Portable"]


class Portable:
    """Base class of a portable prior or likelihood.

    Subclasses call :meth:`param` and :meth:`constant` in ``__init__`` and implement
    ``distribution``:

    - a prior: ``__init__(self, latent_dim, **settings)`` and
      ``distribution(self, dist, ops, p)`` returning a distribution over one latent vector
      (event shape ``(latent_dim,)``);
    - a likelihood: ``__init__(self, event_shape, **settings)`` and
      ``distribution(self, dist, ops, p, out)`` returning a distribution over one datapoint
      given the decoder's output ``out`` (shape ``(..., *param_shape)``); class attribute
      ``support`` (``"unit_interval"``: data in [0, 1]; ``"real"``: any finite value;
      ``"count"``: non-negative integers, which the data preparation never rescales) and
      optional attribute ``param_shape`` (default: the event shape, one decoder output per
      value; k parameters per value go first, ``(k, *event_shape)``).

    ``dist`` is ``pyro.distributions`` or ``numpyro.distributions``; ``ops`` offers ``exp``,
    ``log``, ``log1p``, ``softplus``, ``sigmoid``, ``sqrt``, ``tanh``, ``abs``, ``where``,
    ``zeros_like`` and ``ones_like`` for that backend; ``p`` maps every declared name to
    its array. A likelihood may define ``mean(self, dist, ops, p, out)``; the default is the
    distribution's ``.mean``.
    """

    support = "real"

    def param(self, name: str, init) -> None:
        """Declare a learnable parameter with its initial value."""
        self._declare(name, init, learnable=True)

    def constant(self, name: str, value) -> None:
        """Declare a fixed array (moved to the device with the model, never trained)."""
        self._declare(name, value, learnable=False)

    def _declare(self, name: str, value, learnable: bool) -> None:
        store = self.__dict__.setdefault("_arrays", {})
        if name in store:
            raise ValueError(f"{type(self).__name__} declares {name!r} twice")
        store[name] = (np.asarray(value, dtype=np.float32), learnable)

    @property
    def arrays(self) -> dict[str, tuple[np.ndarray, bool]]:
        """Declared arrays: name -> (initial value, learnable)."""
        return dict(self.__dict__.get("_arrays", {}))

    def distribution(self, dist, ops, p, *inputs) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must define distribution()")


def is_portable(factory) -> bool:
    """Whether a registered factory is a :class:`Portable` subclass."""
    return isinstance(factory, type) and issubclass(factory, Portable)
