"""Portable priors and likelihoods (:class:`ppvae.Portable`) as Equinox modules.

This is the whole NumPyro translation of a component written once (the built-ins in
:mod:`ppvae.model.priors` and :mod:`ppvae.model.likelihoods`, and users' plug-ins): the
ops and distributions it is given, and a module that holds its arrays.
"""

from __future__ import annotations

import functools
import types

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions

from ppvae.backends.numpyro.distributions import ContinuousBernoulli, GreyLevels, SqueezedBeta
from ppvae.errors import UsageError
from ppvae.model.portable import Distributions, random_source

__all__ = ["OPS", "DIST", "PortableModule", "adapt_portable"]

OPS = types.SimpleNamespace(
    exp=jnp.exp,
    log=jnp.log,
    log1p=jnp.log1p,
    softplus=jax.nn.softplus,
    sigmoid=jax.nn.sigmoid,
    sqrt=jnp.sqrt,
    tanh=jnp.tanh,
    abs=jnp.abs,
    where=jnp.where,
    zeros_like=jnp.zeros_like,
    ones_like=jnp.ones_like,
    broadcast_to=jnp.broadcast_to,
    moveaxis=jnp.moveaxis,
    take=lambda x, index, axis: jnp.take(x, index, axis=axis),
)
DIST = Distributions(
    numpyro.distributions, SqueezedBeta=SqueezedBeta, GreyLevels=GreyLevels, ContinuousBernoulli=ContinuousBernoulli
)


class PortableModule(eqx.Module):
    """Holds a portable component's arrays; constants pass through ``stop_gradient``.

    Each array is a field under its declared name, in declaration order (a subclass per
    set of names, :func:`module_class`), so the params read ``prior$params.loc``, ... as
    the Pyro backend's state dict reads ``prior.loc``.
    """

    spec: object = eqx.field(static=True)
    names: tuple = eqx.field(static=True)
    learnable: tuple = eqx.field(static=True)
    event_shape: tuple = eqx.field(static=True)
    param_shape: tuple = eqx.field(static=True)
    support: str = eqx.field(static=True)

    def __init__(self, spec, event_shape=(), param_shape=()):
        arrays = spec.arrays
        self.spec = spec
        self.names = tuple(arrays)
        self.learnable = tuple(name for name, (_, learn) in arrays.items() if learn)
        self.event_shape = tuple(event_shape)
        self.param_shape = tuple(param_shape)
        self.support = spec.support
        for name, (value, _) in arrays.items():
            setattr(self, name, jnp.asarray(value))

    def _p(self) -> dict:
        return {
            name: (getattr(self, name) if name in self.learnable else jax.lax.stop_gradient(getattr(self, name)))
            for name in self.names
        }

    def __call__(self, *inputs):
        return self.spec.distribution(DIST, OPS, self._p(), *inputs)

    def mean(self, out):
        return self.spec.mean(DIST, OPS, self._p(), out)


_RESERVED = frozenset(dir(PortableModule)) | {"spec", "names", "learnable", "event_shape", "param_shape", "support"}


@functools.lru_cache(maxsize=None)
def module_class(names: tuple[str, ...]) -> type:
    """The :class:`PortableModule` subclass whose array fields are ``names`` (one class per set of names).

    Cached, so two VAEs built from one spec have modules of one class (and one pytree
    structure, which a checkpoint and ``eqx.combine`` need).
    """
    clash = sorted(set(names) & _RESERVED)
    if clash:
        raise UsageError(
            f"a ppvae.Portable may not name an array {clash[0]!r} (the NumPyro module uses that name); rename it"
        )
    return type(
        "PortableModule", (PortableModule,), {"__annotations__": {n: jax.Array for n in names}, "__module__": __name__}
    )


def _normal_from(key):
    """Standard-normal draws from ``key``: the first draw uses the key itself, later ones fold in a count."""
    calls = [0]

    def draw(shape):
        k = key if calls[0] == 0 else jax.random.fold_in(key, calls[0])
        calls[0] += 1
        return jax.random.normal(k, shape)

    return draw


def adapt_portable(kind: str, cls):
    """A registry factory that builds ``cls`` and wraps it for the NumPyro backend."""

    def factory(key=None, **kwargs):
        with random_source(_normal_from(jax.random.PRNGKey(0) if key is None else key)):
            spec = cls(**kwargs)
        module = module_class(tuple(spec.arrays))
        if kind == "likelihood":
            event_shape = tuple(kwargs["event_shape"])
            return module(spec, event_shape, tuple(getattr(spec, "param_shape", event_shape)))
        return module(spec)

    functools.update_wrapper(factory, cls, updated=())
    factory.support = cls.support
    return factory
