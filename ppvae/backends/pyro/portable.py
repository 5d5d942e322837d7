"""Portable priors and likelihoods (:class:`ppvae.Portable`) as PyTorch modules."""

from __future__ import annotations

import functools
import types

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

OPS = types.SimpleNamespace(
    exp=torch.exp, log=torch.log, log1p=torch.log1p, softplus=F.softplus, sigmoid=torch.sigmoid,
    sqrt=torch.sqrt, tanh=torch.tanh, abs=torch.abs, where=torch.where,
    zeros_like=torch.zeros_like, ones_like=torch.ones_like,
)


class PortableModule(nn.Module):
    """Holds a portable component's arrays as parameters (learnable) or buffers (constants)."""

    def __init__(self, spec):
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
        self.support = getattr(spec, "support", "real")

    def _p(self) -> dict:
        return {name: getattr(self, name) for name in self._names}

    def forward(self, *inputs):
        return self.spec.distribution(dist, OPS, self._p(), *inputs)

    def mean(self, out):
        if hasattr(self.spec, "mean"):
            return self.spec.mean(dist, OPS, self._p(), out)
        return self(out).mean


def adapt_portable(kind: str, cls):
    """A registry factory that builds ``cls`` and wraps it for the Pyro backend."""

    def factory(**kwargs):
        spec = cls(**kwargs)
        module = PortableModule(spec)
        if kind == "likelihood":
            module.event_shape = tuple(kwargs["event_shape"])
            module.param_shape = tuple(getattr(spec, "param_shape", module.event_shape))
        return module

    functools.update_wrapper(factory, cls, updated=())
    factory.support = getattr(cls, "support", "real")
    return factory
