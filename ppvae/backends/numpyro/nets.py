"""Encoder and decoder networks in Equinox, registered for the NumPyro backend.

They mirror the Pyro backend's networks layer for layer and name for name
(``eqx.nn.Sequential`` indices match ``torch.nn.Sequential`` indices, activations
included), so a Pyro run's weights convert mechanically (see :mod:`.convert`) and the two
backends compute the same function. Every module takes a batch with arbitrary leading
dimensions, like the PyTorch ones.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from ppvae.errors import unknown_name
from ppvae.spec.registry import register
from ppvae.model.shapes import deconv_filters, hidden_list, image_shape

BACKEND = "numpyro"

_ACTIVATIONS = {
    "relu": jax.nn.relu,
    "softplus": jax.nn.softplus,
    "tanh": jnp.tanh,
    "elu": jax.nn.elu,
    # torch's GELU is the exact (erf) form.
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, 0.01),
}

# Smallest posterior scale, as in the Pyro backend.
MIN_SCALE = 1e-5


def make_activation(name: str) -> eqx.nn.Lambda:
    """An activation layer by name (``relu``, ``softplus``, ``tanh``, ...)."""
    if name not in _ACTIVATIONS:
        raise unknown_name("activation", name, _ACTIVATIONS)
    return eqx.nn.Lambda(_ACTIVATIONS[name])


def _keys(key, n):
    return list(jax.random.split(key, max(n, 1)))


def mlp(sizes: list[int], act: str, key) -> eqx.nn.Sequential:
    """Fully connected stack with ``act`` between (not after) its layers."""
    layers: list = []
    keys = _keys(key, len(sizes))
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(eqx.nn.Linear(n_in, n_out, key=keys[i]))
        if i < len(sizes) - 2:
            layers.append(make_activation(act))
    return eqx.nn.Sequential(layers)


def batched(fn, x: jax.Array, event_dims: int):
    """Apply a single-example function over all leading dimensions of ``x``."""
    lead = x.shape[: x.ndim - event_dims]
    flat = x.reshape((-1, *x.shape[x.ndim - event_dims :]))
    out = jax.vmap(fn)(flat)
    if isinstance(out, tuple):
        return tuple(o.reshape((*lead, *o.shape[1:])) for o in out)
    return out.reshape((*lead, *out.shape[1:]))


class _Gaussian(eqx.Module):
    loc: eqx.nn.Linear
    raw_scale: eqx.nn.Linear
    extra: eqx.nn.Linear | None

    def __init__(self, n_in: int, latent_dim: int, key, extra_outputs: int = 0):
        k1, k2 = jax.random.split(key)
        self.loc = eqx.nn.Linear(n_in, latent_dim, key=k1)
        self.raw_scale = eqx.nn.Linear(n_in, latent_dim, key=k2)
        # A key of its own (folded in, not split off) keeps loc's and raw_scale's initial
        # values those of the default encoder; named as in the Pyro backend.
        self.extra = eqx.nn.Linear(n_in, extra_outputs, key=jax.random.fold_in(key, 2)) if extra_outputs else None

    def __call__(self, h):
        loc, scale = self.loc(h), jax.nn.softplus(self.raw_scale(h)) + MIN_SCALE
        return (loc, scale) if self.extra is None else (loc, scale, self.extra(h))


@register("encoder", "mlp", backend=BACKEND)
class MLPEncoder(eqx.Module):
    """Fully connected encoder: flatten x, hidden layers, then Normal loc and scale."""

    body: eqx.Module
    act: eqx.Module
    head: _Gaussian
    event_dims: int = eqx.field(static=True)

    def __init__(self, event_shape, latent_dim, hidden=(400,), activation="relu", extra_outputs=0, *, key):
        hidden = hidden_list("encoder", hidden)
        k1, k2 = jax.random.split(key)
        n_in = math.prod(event_shape)
        self.event_dims = len(event_shape)
        self.body = mlp([n_in, *hidden], activation, k1) if hidden else eqx.nn.Identity()
        self.act = make_activation(activation) if hidden else eqx.nn.Identity()
        self.head = _Gaussian(hidden[-1] if hidden else n_in, latent_dim, k2, extra_outputs)

    def __call__(self, x):
        return batched(lambda v: self.head(self.act(self.body(v.reshape(-1)))), x, self.event_dims)


@register("encoder", "conv", backend=BACKEND)
class ConvEncoder(eqx.Module):
    """Convolutional encoder: 3x3 convolutions of stride 2, a dense layer, then Normal loc and scale."""

    conv: eqx.nn.Sequential
    dense: eqx.Module
    head: _Gaussian
    image_shape: tuple = eqx.field(static=True)
    event_dims: int = eqx.field(static=True)

    def __init__(
        self,
        event_shape,
        latent_dim,
        channels=(32, 64),
        kernel_size=3,
        hidden=(64,),
        activation="relu",
        extra_outputs=0,
        *,
        key,
    ):
        c, h, w = image_shape("encoder", "conv", event_shape)
        channels = hidden_list("encoder channels", channels)
        hidden = hidden_list("encoder", hidden) if hidden else []
        self.image_shape = (c, h, w)
        self.event_dims = len(event_shape)
        keys = _keys(key, len(channels) + 2)
        layers: list = []
        for i, c_out in enumerate(channels):
            layers += [
                eqx.nn.Conv2d(c, c_out, kernel_size, stride=2, padding=kernel_size // 2, key=keys[i]),
                make_activation(activation),
            ]
            c = c_out
        self.conv = eqx.nn.Sequential(layers)
        n_flat = jax.eval_shape(self.conv, jax.ShapeDtypeStruct(self.image_shape, jnp.float32)).size
        self.dense = (
            eqx.nn.Sequential([mlp([n_flat, *hidden], activation, keys[-2]), make_activation(activation)])
            if hidden
            else eqx.nn.Identity()
        )
        self.head = _Gaussian(hidden[-1] if hidden else n_flat, latent_dim, keys[-1], extra_outputs)

    def __call__(self, x):
        def one(v):
            return self.head(self.dense(self.conv(v.reshape(self.image_shape)).reshape(-1)))

        return batched(one, x, self.event_dims)


@register("decoder", "mlp", backend=BACKEND)
class MLPDecoder(eqx.Module):
    """Fully connected decoder: z, hidden layers, then the likelihood's parameters."""

    net: eqx.nn.Sequential
    param_shape: tuple = eqx.field(static=True)

    def __init__(self, latent_dim, param_shape, hidden=(400,), activation="relu", *, key):
        hidden = hidden_list("decoder", hidden)
        self.param_shape = tuple(param_shape)
        self.net = mlp([latent_dim, *hidden, math.prod(param_shape)], activation, key)

    def __call__(self, z):
        return batched(lambda v: self.net(v).reshape(self.param_shape), z, 1)


def output_bias(decoder):
    """Where a decoder's output-layer bias sits: a function of the decoder for ``eqx.tree_at``.

    ``mlp`` and ``linear`` decoders have one bias per output value
    (:mod:`ppvae.inference.initialization`).
    """
    if isinstance(decoder, MLPDecoder):
        return lambda d: d.net.layers[-1].bias
    if isinstance(decoder, LinearDecoder):
        return lambda d: d.linear.bias
    raise TypeError(f"{type(decoder).__name__} has no single output bias")


@register("decoder", "linear", backend=BACKEND)
class LinearDecoder(eqx.Module):
    """Affine decoder W z + b; with a normal likelihood this is probabilistic PCA."""

    linear: eqx.nn.Linear
    param_shape: tuple = eqx.field(static=True)

    def __init__(self, latent_dim, param_shape, *, key):
        self.param_shape = tuple(param_shape)
        self.linear = eqx.nn.Linear(latent_dim, math.prod(param_shape), key=key)

    def __call__(self, z):
        return batched(lambda v: self.linear(v).reshape(self.param_shape), z, 1)


@register("decoder", "conv", backend=BACKEND)
class ConvDecoder(eqx.Module):
    """Transposed-convolution decoder: dense to a small feature map, then 3x3 stride-2 upsampling.

    Settings as the Pyro backend's ``ConvDecoder`` (``map_channels`` included).
    """

    dense: eqx.nn.Sequential
    deconv: eqx.nn.Sequential
    start: tuple = eqx.field(static=True)
    param_shape: tuple = eqx.field(static=True)

    def __init__(
        self,
        latent_dim,
        param_shape,
        channels=(64, 32),
        kernel_size=3,
        hidden=(),
        activation="relu",
        map_channels=None,
        *,
        key,
    ):
        self.param_shape = tuple(param_shape)
        if len(self.param_shape) < 2:
            image_shape("decoder", "conv", self.param_shape)
        spatial = self.param_shape[-2:]
        out_channels = math.prod(self.param_shape) // math.prod(spatial)
        channels = hidden_list("decoder channels", channels)
        hidden = hidden_list("decoder", hidden) if hidden else []
        factor = 2 ** len(channels)
        c, filters = deconv_filters(channels, map_channels)
        self.start = (c, math.ceil(spatial[0] / factor), math.ceil(spatial[1] / factor))
        keys = _keys(key, len(channels) + 2)
        self.dense = mlp([latent_dim, *hidden, math.prod(self.start)], activation, keys[0])
        layers: list = [make_activation(activation)]
        for i, c_out in enumerate(filters):
            layers += [
                eqx.nn.ConvTranspose2d(
                    c, c_out, kernel_size, stride=2, padding=kernel_size // 2, output_padding=1, key=keys[i + 1]
                ),
                make_activation(activation),
            ]
            c = c_out
        layers.append(eqx.nn.Conv2d(c, out_channels, kernel_size, padding=kernel_size // 2, key=keys[-1]))
        self.deconv = eqx.nn.Sequential(layers)

    def __call__(self, z):
        def one(v):
            out = self.deconv(self.dense(v).reshape(self.start))
            return out[..., : self.param_shape[-2], : self.param_shape[-1]].reshape(self.param_shape)

        return batched(one, z, 1)
