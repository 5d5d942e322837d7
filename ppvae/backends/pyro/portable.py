"""Portable priors and likelihoods (:class:`ppvae.Portable`) as PyTorch modules.

This is the whole Pyro translation of a component written once (the built-ins in
:mod:`ppvae.model.priors` and :mod:`ppvae.model.likelihoods`, and users' plug-ins): the
ops and distributions it is given, and a module that holds its arrays.
"""

from __future__ import annotations

import functools
import types

import pyro.distributions
import torch
from torch import nn
from torch.nn import functional as F

from ppvae.backends.pyro.distributions import GreyLevels, SqueezedBeta
from ppvae.model.portable import Distributions, random_source

__all__ = ["OPS", "DIST", "PortableModule", "adapt_portable"]

OPS = types.SimpleNamespace(
    exp=torch.exp,
    log=torch.log,
    log1p=torch.log1p,
    softplus=F.softplus,
    sigmoid=torch.sigmoid,
    sqrt=torch.sqrt,
    tanh=torch.tanh,
    abs=torch.abs,
    where=torch.where,
    zeros_like=torch.zeros_like,
    ones_like=torch.ones_like,
    broadcast_to=torch.broadcast_to,
    moveaxis=torch.movedim,
    take=lambda x, index, axis: x.select(axis, index),
)
DIST = Distributions(pyro.distributions, SqueezedBeta=SqueezedBeta, GreyLevels=GreyLevels)


class PortableModule(nn.Module):
    """Holds a portable component's arrays as parameters (learnable) or buffers (constants).

    They are registered in the order the component declares them, under its names, so the
    state dict reads ``prior.loc``, ``likelihood.log_scale``, ... as in the NumPyro backend.
    """

    def __init__(self, spec, event_shape=(), param_shape=()):
        super().__init__()
        self.spec = spec
        self._names = []
        for name, (value, learnable) in spec.arrays.items():
            tensor = torch.as_tensor(value)
            if learnable:
                self.register_parameter(name, nn.Parameter(tensor))
            else:
                self.register_buffer(name, tensor)
            self._names.append(name)
        self.event_shape = tuple(event_shape)
        self.param_shape = tuple(param_shape)
        self.support = spec.support

    def _p(self) -> dict:
        return {name: getattr(self, name) for name in self._names}

    def forward(self, *inputs):
        return self.spec.distribution(DIST, OPS, self._p(), *inputs)

    def mean(self, out):
        return self.spec.mean(DIST, OPS, self._p(), out)


def _torch_normal(shape: tuple):
    # The global torch generator, which pyro.set_rng_seed seeds: random initial values
    # follow the fit's seed as the networks' weights do.
    return torch.randn(shape).numpy()


def adapt_portable(kind: str, cls):
    """A registry factory that builds ``cls`` and wraps it for the Pyro backend."""

    def factory(**kwargs):
        with random_source(_torch_normal):
            spec = cls(**kwargs)
        if kind == "likelihood":
            event_shape = tuple(kwargs["event_shape"])
            return PortableModule(spec, event_shape, tuple(getattr(spec, "param_shape", event_shape)))
        return PortableModule(spec)

    functools.update_wrapper(factory, cls, updated=())
    factory.support = cls.support
    return factory
