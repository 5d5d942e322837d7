"""Network-shape checks shared by every backend's networks (plain Python, no framework)."""

from __future__ import annotations

from ppvae.errors import UsageError

__all__ = ["hidden_list", "image_shape", "deconv_filters"]


def hidden_list(kind: str, hidden) -> list[int]:
    """Hidden sizes as a list of positive integers (an int means one layer)."""
    if isinstance(hidden, int):
        hidden = [hidden]
    if not isinstance(hidden, (list, tuple)) or not all(isinstance(h, int) and h > 0 for h in hidden):
        raise UsageError(f"{kind} hidden sizes must be a list of positive integers, got {hidden!r}")
    return list(hidden)


def image_shape(kind: str, name: str, shape) -> tuple[int, int, int]:
    """(C, H, W) for image-shaped data, or a clear error for tables."""
    shape = tuple(shape)
    if len(shape) == 2:
        return (1, *shape)
    if len(shape) == 3:
        return shape
    raise UsageError(
        f"the {name} {kind} needs image data (H, W) or (C, H, W), got datapoints of shape "
        f"{shape}; use the mlp {kind} for tabular data"
    )


def deconv_filters(channels: list[int], map_channels) -> tuple[int, list[int]]:
    """The conv decoder's feature-map channels and its transposed convolutions' filters.

    Without ``map_channels`` the map has ``channels[0]`` channels and the filters are
    ``channels[1:] + [channels[-1]]`` (one transposed convolution per entry, so the last
    width repeats); with it, the filters are ``channels`` exactly.
    """
    if map_channels is None:
        return channels[0], channels[1:] + [channels[-1]]
    if isinstance(map_channels, bool) or not isinstance(map_channels, int) or map_channels <= 0:
        raise UsageError(f"decoder map_channels must be a positive integer, got {map_channels!r}")
    return map_channels, list(channels)
