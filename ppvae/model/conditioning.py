"""Class labels of a conditional VAE: checks and shapes shared by every backend (numpy only).

A conditional VAE (``model.conditional = true``) is p(z) p(x|z,y) with q(z|x,y). Every
backend feeds the one-hot label to the decoder as extra inputs next to z, and to the
encoder attached to x, in one of two layouts:

- ``"flat"``: x flattened to ``(D,)`` with the ``C`` one-hot values appended, for encoders
  that take any data shape (the mlp encoder);
- ``"channels"``: the one-hot as ``C`` constant channels appended to an image
  ``(H, W)`` or ``(C0, H, W)``, for encoders that need images (the conv encoder).

Flat data always uses ``"flat"``; for images the model builder tries ``"flat"`` first and
falls back to ``"channels"`` for image-only encoders. ``"channels"`` feeds an mlp encoder
``C x H x W`` label inputs instead of ``C``, which on MNIST multiplies the first layer by
11 for the same function class, hence the preference.

Examples
--------
>>> encoder_event_shape((28, 28), 10, "channels")
(11, 28, 28)
>>> encoder_event_shape((28, 28), 10, "flat")
(794,)
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from ppvae.errors import DataError, UsageError

__all__ = [
    "LAYOUTS",
    "conditional_classes",
    "conditional_encoder",
    "encoder_event_shape",
    "check_class_labels",
    "infer_num_classes",
    "device_labels",
    "require_labels",
    "sample_labels",
]

LAYOUTS = ("flat", "channels")


def encoder_event_shape(event_shape, num_classes: int, layout: str) -> tuple:
    """Shape of one encoder input once the one-hot label of ``num_classes`` is attached."""
    event_shape = tuple(event_shape)
    if layout == "flat":
        return (math.prod(event_shape) + num_classes,)
    if layout == "channels":
        if len(event_shape) == 2:
            return (1 + num_classes, *event_shape)
        if len(event_shape) == 3:
            return (event_shape[0] + num_classes, *event_shape[1:])
        raise UsageError(f"label channels need image data (H, W) or (C, H, W), got datapoints of shape {event_shape}")
    raise UsageError(f"unknown label layout {layout!r}; valid: {', '.join(LAYOUTS)}")


def conditional_classes(spec) -> int:
    """``C`` of a conditional :class:`~ppvae.spec.config.ModelSpec`, ``0`` for an unconditional one."""
    if not spec.conditional:
        return 0
    if spec.num_classes == 0:
        raise UsageError(
            "model.num_classes = 0 has not been resolved: set it to the number of classes, "
            "or let ppvae.fit take it from the training labels"
        )
    return spec.num_classes


def conditional_encoder(make: Callable[..., Any], event_shape, latent_dim: int, num_classes: int):
    """Build the encoder for x with its label attached; return ``(encoder, layout)``.

    ``make(kind, **structural)`` builds a registered component (each backend's builder
    has one). ``"flat"`` is tried first; an encoder that refuses flat data (a UsageError,
    as the conv encoder raises for non-images) is built for ``"channels"`` instead.
    """
    if not num_classes:
        return make("encoder", event_shape=tuple(event_shape), latent_dim=latent_dim), "flat"
    try:
        flat = encoder_event_shape(event_shape, num_classes, "flat")
        return make("encoder", event_shape=flat, latent_dim=latent_dim), "flat"
    except UsageError:
        if len(tuple(event_shape)) < 2:
            raise
    channels = encoder_event_shape(event_shape, num_classes, "channels")
    return make("encoder", event_shape=channels, latent_dim=latent_dim), "channels"


def check_class_labels(
    labels, num_classes: int, n: int | None = None, what: str = "the labels", hint: str = ""
) -> np.ndarray:
    """Labels as an int32 vector with values in ``[0, num_classes)``, or a one-line error.

    Parameters
    ----------
    labels : array-like or int
        One label per datapoint (an int is one label for every point when ``n`` is given).
    num_classes : int
        C; valid labels are 0 .. C-1.
    n : int, optional
        Number of datapoints the labels must match.
    what : str
        How to name the labels in messages.
    hint : str
        Appended to the out-of-range message (how to fix it where the caller knows).

    Raises
    ------
    DataError
        Labels that are not integers, of the wrong length, or out of range.
    """
    arr = np.asarray(labels)
    if arr.ndim == 0 and n is not None:
        arr = np.full(n, arr)
    if arr.ndim != 1 or (n is not None and arr.shape[0] != n):
        expected = f"({n},)" if n is not None else "(n,)"
        raise DataError(f"{what} have shape {tuple(arr.shape)}; expected one label per datapoint, shape {expected}")
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iub":
        raise DataError(f"{what} must be integer class labels, got {arr.dtype} values")
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise DataError(
            f"{what} must lie in [0, {num_classes}) for this model of {num_classes} classes, "
            f"got values from {int(arr.min())} to {int(arr.max())}{hint}"
        )
    return arr.astype(np.int32)


def infer_num_classes(num_classes: int, train_labels, heldout_labels, source: str) -> int:
    """Resolve ``model.num_classes`` for a conditional fit and check both splits' labels.

    Parameters
    ----------
    num_classes : int
        The spec's value; ``0`` means "largest training label + 1".
    train_labels, heldout_labels : numpy.ndarray or None
        The dataset's labels.
    source : str
        The data's name, for messages.

    Raises
    ------
    DataError
        When the data has no labels, or labels outside ``[0, num_classes)``.
    """
    if train_labels is None or heldout_labels is None:
        raise DataError(
            f"model.conditional = true needs class labels, but {source} has none; give an .npz "
            "with labels under 'y' (numpy.savez(file, x=x, y=y)) or an MNIST-format source, "
            "or set model.conditional = false"
        )
    if num_classes == 0:
        top = int(np.max(train_labels)) if np.size(train_labels) else -1
        if np.size(train_labels) and int(np.min(train_labels)) < 0:
            raise DataError(f"the training labels of {source} must be 0, 1, 2, ...; got negative values")
        num_classes = max(top + 1, 1)
    hint = "; fix the labels, or set model.num_classes (0 takes it from the training labels)"
    check_class_labels(train_labels, num_classes, what=f"the training labels of {source}", hint=hint)
    check_class_labels(heldout_labels, num_classes, what=f"the held-out labels of {source}", hint=hint)
    return num_classes


def device_labels(spec, dataset, put: Callable[[np.ndarray], Any]) -> tuple[Any, Any]:
    """A trainer's label arrays: ``(put(train labels), put(labels of dataset.monitor))``, or ``(None, None)``.

    For a conditional spec the labels are checked first (a :class:`DataError` when the
    data has none or they are out of range); ``put`` moves an int32 array to the device.
    """
    if not spec.conditional:
        return None, None
    infer_num_classes(conditional_classes(spec), dataset.train_labels, dataset.heldout_labels, dataset.name)
    return (
        put(np.asarray(dataset.train_labels, dtype=np.int32)),
        put(np.asarray(dataset.monitor[2], dtype=np.int32)),
    )


def require_labels(num_classes: int, y, n: int, what: str = "the labels") -> np.ndarray | None:
    """Check the labels passed to a trained model's method.

    Returns the int32 labels for a conditional model (``num_classes > 0``) and ``None`` for
    an unconditional one.

    Raises
    ------
    UsageError
        No labels for a conditional model, or labels for an unconditional one.
    DataError
        Labels of the wrong length or out of range.
    """
    if num_classes == 0:
        if y is not None:
            raise UsageError(
                "class labels were given, but this model is not conditional (model.conditional = false); drop them"
            )
        return None
    if y is None:
        raise UsageError(
            f"this is a conditional model of {num_classes} classes: it needs the class labels "
            f"(integers 0 .. {num_classes - 1}, one per datapoint, or one for all)"
        )
    return check_class_labels(y, num_classes, n, what=what)


def sample_labels(num_classes: int, n: int, label=None) -> np.ndarray:
    """Labels for ``n`` samples: all ``label``, or (``None``) the classes in turn 0, 1, .., C-1, 0, ..."""
    if label is None:
        return (np.arange(n) % num_classes).astype(np.int32)
    return check_class_labels(label, num_classes, n)


class LabelledInputs:
    """What a VAE's networks see, with or without labels: written once, mixed into each backend's VAE.

    The VAE sets ``num_classes`` (0: unconditional), ``event_shape`` and ``label_layout``;
    its class sets ``labels``, the backend's module of array operations (``one_hot``,
    ``attach_label``, ``append_label``).
    """

    labels: Any
    num_classes: int
    event_shape: tuple
    label_layout: str

    def check_labels(self, y) -> None:
        """Labels are required by a conditional model and refused by an unconditional one."""
        if self.num_classes and y is None:
            raise UsageError(
                f"this VAE is conditional on {self.num_classes} classes: call it with the labels, "
                "e.g. model(x, y=labels)"
            )
        if not self.num_classes and y is not None:
            raise UsageError(
                "labels y were given to an unconditional VAE; drop y, or build the model with model.conditional = true"
            )

    def encoder_input(self, x, y=None):
        """What the encoder sees: ``x``, with ``one_hot(y)`` attached for a conditional VAE."""
        if not self.num_classes:
            return x
        onehot = self.labels.one_hot(y, self.num_classes, x.dtype)
        return self.labels.attach_label(x, onehot, len(self.event_shape), self.label_layout)

    def decoder_input(self, z, y=None):
        """What the decoder sees: ``z``, or ``concat(z, one_hot(y))`` for a conditional VAE."""
        if not self.num_classes:
            return z
        return self.labels.append_label(z, self.labels.one_hot(y, self.num_classes, z.dtype))
