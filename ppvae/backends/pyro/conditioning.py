"""Attaching a class label to the encoder's and the decoder's inputs (PyTorch).

The networks stay unconditional; a conditional VAE feeds them enlarged inputs built here.
See :mod:`ppvae.model.conditioning` for the two layouts and why ``"flat"`` is preferred.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["one_hot", "attach_label", "append_label"]


def one_hot(y: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """Integer labels ``(*lead,)`` as one-hot rows ``(*lead, num_classes)`` of ``dtype``."""
    return F.one_hot(y.long(), num_classes).to(dtype)


def attach_label(x: torch.Tensor, onehot: torch.Tensor, event_dims: int, layout: str) -> torch.Tensor:
    """The encoder's input: ``x`` of shape ``(*lead, *event)`` with its one-hot label attached.

    ``layout="flat"`` flattens each datapoint and appends the ``C`` one-hot values, giving
    ``(*lead, D + C)``; ``layout="channels"`` appends ``C`` constant image planes (0 or 1)
    to an image ``(H, W)`` or ``(C0, H, W)``, giving ``(*lead, C0 + C, H, W)``. ``onehot``
    has shape ``(*lead, C)`` (or broadcasts to it).
    """
    lead = x.shape[: x.dim() - event_dims]
    onehot = onehot.expand(*lead, onehot.shape[-1])
    if layout == "flat":
        return torch.cat([x.reshape(*lead, -1), onehot], dim=-1)
    image = x.unsqueeze(-3) if event_dims == 2 else x
    planes = onehot[..., None, None].expand(*lead, onehot.shape[-1], *image.shape[-2:])
    return torch.cat([image, planes], dim=-3)


def append_label(z: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """The decoder's input: ``concat(z, one_hot(y))`` along the last axis.

    ``onehot`` ``(B, C)`` broadcasts over leading particle dimensions of ``z`` ``(K, B, Z)``.
    """
    return torch.cat([z, onehot.expand(*z.shape[:-1], onehot.shape[-1])], dim=-1)
