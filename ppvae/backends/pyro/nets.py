"""Encoder and decoder networks (PyTorch), registered for the Pyro backend.

Encoders map a batch ``x`` of shape ``(..., *event_shape)`` to the ``(loc, scale)`` of a
diagonal Normal q(z|x), followed by ``extra`` of shape ``(..., extra_outputs)`` when built
with ``extra_outputs > 0`` (values a guide family such as ``lowrank`` needs); decoders
map ``z`` of shape ``(..., latent_dim)`` to the likelihood's parameters, shape
``(..., *param_shape)``. Leading batch dimensions are arbitrary so that several particles
of z can be decoded at once.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ppvae.errors import unknown_name
from ppvae.spec.registry import register
from ppvae.model.shapes import deconv_filters, hidden_list, image_shape

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
}

# Smallest posterior scale: keeps log q(z|x) finite when an encoder collapses a dimension.
MIN_SCALE = 1e-5


def make_activation(name: str) -> nn.Module:
    """Build an activation layer by name (``relu``, ``softplus``, ``tanh``, ...)."""
    if name not in _ACTIVATIONS:
        raise unknown_name("activation", name, _ACTIVATIONS)
    return _ACTIVATIONS[name]()


def mlp(sizes: list[int], act: str) -> nn.Sequential:
    """A fully connected stack with ``act`` between (not after) its layers."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(make_activation(act))
    return nn.Sequential(*layers)


class _Gaussian(nn.Module):
    """Shared head: split features into (loc, scale) with a softplus scale, and ``extra`` if asked."""

    def __init__(self, n_in: int, latent_dim: int, extra_outputs: int = 0):
        super().__init__()
        self.loc = nn.Linear(n_in, latent_dim)
        self.raw_scale = nn.Linear(n_in, latent_dim)
        # Built only when a guide family asks for it, after the others: the default
        # encoder's parameter names and initial values stay what they were.
        self.extra = nn.Linear(n_in, extra_outputs) if extra_outputs else None

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        loc, scale = self.loc(h), F.softplus(self.raw_scale(h)) + MIN_SCALE
        return (loc, scale) if self.extra is None else (loc, scale, self.extra(h))


@register("encoder", "mlp", backend="pyro")
class MLPEncoder(nn.Module):
    """Fully connected encoder: flatten x, hidden layers, then Normal loc and scale."""

    def __init__(self, event_shape, latent_dim, hidden=(400,), activation="relu", extra_outputs=0):
        super().__init__()
        hidden = hidden_list("encoder", hidden)
        self.event_dims = len(event_shape)
        n_in = math.prod(event_shape)
        self.body = mlp([n_in, *hidden], activation) if hidden else nn.Identity()
        self.act = make_activation(activation) if hidden else nn.Identity()
        self.head = _Gaussian(hidden[-1] if hidden else n_in, latent_dim, extra_outputs)

    def forward(self, x: torch.Tensor):
        h = x.reshape(*x.shape[: x.dim() - self.event_dims], -1)
        return self.head(self.act(self.body(h)))


@register("encoder", "conv", backend="pyro")
class ConvEncoder(nn.Module):
    """Convolutional encoder: 3x3 convolutions of stride 2, a dense layer, then Normal loc and scale."""

    def __init__(
        self,
        event_shape,
        latent_dim,
        channels=(32, 64),
        kernel_size=3,
        hidden=(64,),
        activation="relu",
        extra_outputs=0,
    ):
        super().__init__()
        c, h, w = image_shape("encoder", "conv", event_shape)
        channels = hidden_list("encoder channels", channels)
        hidden = hidden_list("encoder", hidden) if hidden else []
        self.event_shape = tuple(event_shape)
        self.image_shape = (c, h, w)
        layers: list[nn.Module] = []
        for c_out in channels:
            layers += [
                nn.Conv2d(c, c_out, kernel_size, stride=2, padding=kernel_size // 2),
                make_activation(activation),
            ]
            c = c_out
        self.conv = nn.Sequential(*layers)
        with torch.no_grad():
            n_flat = self.conv(torch.zeros(1, *self.image_shape)).numel()
        self.dense = (
            nn.Sequential(mlp([n_flat, *hidden], activation), make_activation(activation)) if hidden else nn.Identity()
        )
        self.head = _Gaussian(hidden[-1] if hidden else n_flat, latent_dim, extra_outputs)

    def forward(self, x: torch.Tensor):
        batch = x.shape[: x.dim() - len(self.event_shape)]
        h = self.conv(x.reshape(-1, *self.image_shape)).flatten(1)
        return tuple(out.reshape(*batch, -1) for out in self.head(self.dense(h)))


@register("decoder", "mlp", backend="pyro")
class MLPDecoder(nn.Module):
    """Fully connected decoder: z, hidden layers, then the likelihood's parameters."""

    def __init__(self, latent_dim, param_shape, hidden=(400,), activation="relu"):
        super().__init__()
        hidden = hidden_list("decoder", hidden)
        self.param_shape = tuple(param_shape)
        self.net = mlp([latent_dim, *hidden, math.prod(param_shape)], activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).reshape(*z.shape[:-1], *self.param_shape)


def output_bias(decoder: nn.Module) -> torch.Tensor:
    """The bias of a decoder's output layer (one value per output), for data-dependent initialization.

    ``mlp`` and ``linear`` decoders have one (:mod:`ppvae.inference.initialization`).
    """
    if isinstance(decoder, MLPDecoder):
        return decoder.net[-1].bias
    if isinstance(decoder, LinearDecoder):
        return decoder.linear.bias
    raise TypeError(f"{type(decoder).__name__} has no single output bias")


@register("decoder", "linear", backend="pyro")
class LinearDecoder(nn.Module):
    """Affine decoder W z + b; with a normal likelihood this is probabilistic PCA."""

    def __init__(self, latent_dim, param_shape):
        super().__init__()
        self.param_shape = tuple(param_shape)
        self.linear = nn.Linear(latent_dim, math.prod(param_shape))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(z).reshape(*z.shape[:-1], *self.param_shape)


@register("decoder", "conv", backend="pyro")
class ConvDecoder(nn.Module):
    """Transposed-convolution decoder: dense to a small feature map, then 3x3 stride-2 upsampling.

    ``len(channels)`` transposed convolutions of stride 2 upsample the map, and a final
    convolution gives the likelihood's parameters per pixel. With ``map_channels`` unset,
    the dense layer makes a ``channels[0]``-channel map and the transposed convolutions
    have ``channels[1:]`` filters followed by ``channels[-1]`` again; with
    ``map_channels = m`` the map has ``m`` channels and the transposed convolutions have
    exactly ``channels`` filters (``map_channels = 32, channels = [64, 32]``: a 32-channel
    7x7 map, then 64 and 32 filters).
    """

    def __init__(
        self, latent_dim, param_shape, channels=(64, 32), kernel_size=3, hidden=(), activation="relu", map_channels=None
    ):
        super().__init__()
        self.param_shape = tuple(param_shape)
        # Likelihoods with several parameters per pixel put them first: (k, [C,] H, W).
        spatial = self.param_shape[-2:]
        if len(self.param_shape) < 2:
            image_shape("decoder", "conv", self.param_shape)
        out_channels = math.prod(self.param_shape) // math.prod(spatial)
        channels = hidden_list("decoder channels", channels)
        hidden = hidden_list("decoder", hidden) if hidden else []
        factor = 2 ** len(channels)
        h0, w0 = math.ceil(spatial[0] / factor), math.ceil(spatial[1] / factor)
        c, filters = deconv_filters(channels, map_channels)
        self.start = (c, h0, w0)
        self.dense = mlp([latent_dim, *hidden, math.prod(self.start)], activation)
        layers: list[nn.Module] = [make_activation(activation)]
        for c_out in filters:
            layers += [
                nn.ConvTranspose2d(c, c_out, kernel_size, stride=2, padding=kernel_size // 2, output_padding=1),
                make_activation(activation),
            ]
            c = c_out
        layers.append(nn.Conv2d(c, out_channels, kernel_size, padding=kernel_size // 2))
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[:-1]
        h = self.dense(z.reshape(-1, z.shape[-1])).reshape(-1, *self.start)
        out = self.deconv(h)
        # Crop when the image size is not a multiple of 2**len(channels).
        out = out[..., : self.param_shape[-2], : self.param_shape[-1]]
        return out.reshape(*batch, *self.param_shape)
