"""Portable priors and likelihoods (:class:`ppvae.Portable`) as Equinox modules."""

from __future__ import annotations

import functools
import types

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as dist

OPS = types.SimpleNamespace(
    exp=jnp.exp, log=jnp.log, log1p=jnp.log1p, softplus=jax.nn.softplus, sigmoid=jax.nn.sigmoid,
    sqrt=jnp.sqrt, tanh=jnp.tanh, abs=jnp.abs, where=jnp.where,
    zeros_like=jnp.zeros_like, ones_like=jnp.ones_like,
)


class PortableModule(eqx.Module):
    """Holds a portable component's arrays; constants pass through ``stop_gradient``."""

    arrays: dict
    spec: object = eqx.field(static=True)
    learnable: tuple = eqx.field(static=True)
    event_shape: tuple = eqx.field(static=True)
    param_shape: tuple = eqx.field(static=True)
    support: str = eqx.field(static=True)

    def __init__(self, spec, event_shape=(), param_shape=()):
        self.spec = spec
        self.arrays = {name: jnp.asarray(value) for name, (value, _) in spec.arrays.items()}
        self.learnable = tuple(name for name, (_, learn) in spec.arrays.items() if learn)
        self.event_shape = tuple(event_shape)
        self.param_shape = tuple(param_shape)
        self.support = getattr(spec, "support", "real")

    def _p(self) -> dict:
        return {name: (value if name in self.learnable else jax.lax.stop_gradient(value))
                for name, value in self.arrays.items()}

    def __call__(self, *inputs):
        return self.spec.distribution(dist, OPS, self._p(), *inputs)

    def mean(self, out):
        if hasattr(self.spec, "mean"):
            return self.spec.mean(dist, OPS, self._p(), out)
        return self(out).mean


def adapt_portable(kind: str, cls):
    """A registry factory that builds ``cls`` and wraps it for the NumPyro backend."""

    def factory(key=None, **kwargs):
        spec = cls(**kwargs)
        if kind == "likelihood":
            event_shape = tuple(kwargs["event_shape"])
            return PortableModule(spec, event_shape, tuple(getattr(spec, "param_shape", event_shape)))
        return PortableModule(spec)

    functools.update_wrapper(factory, cls, updated=())
    factory.support = getattr(cls, "support", "real")
    return factory
