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

import contextlib
import contextvars
from typing import Any, Callable, Iterator

import numpy as np

__all__ = ["Portable", "is_portable", "random_source", "Distributions"]

#: The backend's generator of standard-normal draws while a component is being built
#: (see :func:`random_source`); each backend seeds it from its own RNG.
_NORMAL_DRAWS: contextvars.ContextVar[Callable[[tuple], np.ndarray] | None] = contextvars.ContextVar(
    "ppvae_portable_normal_draws", default=None
)


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
    distribution's ``.mean``. Random initial values come from :meth:`standard_normal`,
    which draws from the backend's seeded RNG.
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

    # Two components of one class built with the same settings behave the same, so they
    # compare equal: NumPyro keeps the component in its modules' static structure, and two
    # VAEs built from one spec must have interchangeable params. Attributes that cannot be
    # hashed make a component equal only to itself.
    def _identity(self) -> tuple:
        items = []
        for name, value in sorted(vars(self).items()):
            if name == "_arrays":
                continue
            try:
                hash(value)
            except TypeError:
                return (type(self), id(self))
            items.append((name, value))
        return (type(self), tuple(items))

    def __eq__(self, other) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def standard_normal(self, shape) -> np.ndarray:
        """Standard-normal draws of ``shape`` for a random initial value.

        The backend building the component supplies them from its own seeded RNG (the
        global torch generator for Pyro, the part's PRNG key for NumPyro), so a fit is
        reproducible from its seed; outside a backend they come from a fixed numpy seed.
        """
        draw = _NORMAL_DRAWS.get()
        shape = tuple(int(n) for n in shape)
        if draw is None:
            return np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        return np.asarray(draw(shape), dtype=np.float32)

    @property
    def arrays(self) -> dict[str, tuple[np.ndarray, bool]]:
        """Declared arrays: name -> (initial value, learnable)."""
        return dict(self.__dict__.get("_arrays", {}))

    def distribution(self, dist, ops, p, *inputs) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must define distribution()")

    def mean(self, dist, ops, p, out) -> Any:
        """A likelihood's mean given the decoder's output: by default the distribution's ``.mean``."""
        return self.distribution(dist, ops, p, out).mean


def is_portable(factory) -> bool:
    """Whether a registered factory is a :class:`Portable` subclass."""
    return isinstance(factory, type) and issubclass(factory, Portable)


@contextlib.contextmanager
def random_source(draw: Callable[[tuple], Any]) -> Iterator[None]:
    """Components built inside this block take their random initial values from ``draw``.

    ``draw(shape)`` returns standard-normal values; a backend wraps the construction of a
    :class:`Portable` in it so that :meth:`Portable.standard_normal` uses the backend's RNG.
    """
    token = _NORMAL_DRAWS.set(draw)
    try:
        yield
    finally:
        _NORMAL_DRAWS.reset(token)


class Distributions:
    """A backend's distributions module with the few distributions ppvae adds to it.

    ``Portable.distribution`` receives one of these as ``dist``: every name of the
    backend's module (``dist.Normal``, ...) and ppvae's additions, which the two backends
    provide under the same names and signatures (``SqueezedBeta``, ``GreyLevels`` and,
    where the library lacks it, ``ContinuousBernoulli``).
    """

    def __init__(self, base, **extras):
        self._base = base
        self._extras = extras

    def __getattr__(self, name: str):
        extras = self.__dict__.get("_extras", {})
        if name in extras:
            return extras[name]
        return getattr(self.__dict__["_base"], name)
