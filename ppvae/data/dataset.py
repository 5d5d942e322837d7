"""The prepared dataset every backend trains on: plain numpy arrays plus metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Dataset"]


@dataclass(frozen=True)
class Dataset:
    """A prepared train/held-out split.

    Attributes
    ----------
    name : str
        Human-readable origin (``"embedded MNIST test digits"``, a file path, ...).
    train : numpy.ndarray or StreamingRows
        float32, shape ``(n_train, *event_shape)`` (read on demand when :attr:`streaming`). With ``binarize == "dynamic"`` it
        holds the probabilities that every minibatch is binarized from.
    heldout : numpy.ndarray
        float32, shape ``(n_heldout, *event_shape)``, already in its final form (binarized
        once with a fixed seed where binarization is on), so evaluation is repeatable.
    event_shape : tuple of int
        Shape of one datapoint: ``(28, 28)`` for MNIST, ``(d,)`` for a table.
    is_image : bool
        Whether datapoints are images (pictures are drawn, bits per dimension reported).
    binarize : str
        The resolved mode: ``"dynamic"``, ``"static"`` or ``"none"``.
    train_labels, heldout_labels : numpy.ndarray or None
        Integer labels when the source has them.
    validation, validation_labels : numpy.ndarray or None
        The validation split (``data.validation_fraction`` of the training rows, prepared
        like the held-out split) and its labels; ``None`` without one.
    transform : dict
        Plain-JSON record of the preprocessing (scale mode, standardization mean/sd,
        min/max) so new data can be prepared the same way and outputs mapped back.
    """

    name: str
    train: np.ndarray
    heldout: np.ndarray
    event_shape: tuple
    is_image: bool
    binarize: str
    train_labels: np.ndarray | None = None
    heldout_labels: np.ndarray | None = None
    transform: dict[str, Any] = field(default_factory=dict)
    validation: np.ndarray | None = None
    validation_labels: np.ndarray | None = None

    @property
    def monitor(self) -> tuple[str, Any, np.ndarray | None]:
        """The split training reports its per-epoch ELBO on: ``(name, rows, labels)``.

        The validation split when there is one (the held-out split is then not read before
        the final evaluation), else the held-out split.
        """
        if self.validation is not None:
            return "validation", self.validation, self.validation_labels
        return "heldout", self.heldout, self.heldout_labels

    @property
    def streaming(self) -> bool:
        """Whether the splits are read from their file on demand (``data.stream``).

        Then ``train`` and ``heldout`` are :class:`~ppvae.data.streaming.StreamingRows`:
        index or slice them (or iterate ``.chunks()``) to get prepared float32 rows.
        """
        return not isinstance(self.train, np.ndarray)

    def info(self) -> dict:
        """What a run folder's ``data.json`` records of the data (plain JSON)."""
        return {
            "name": self.name,
            "event_shape": list(self.event_shape),
            "is_image": self.is_image,
            "binarize": self.binarize,
            "num_train": int(self.train.shape[0]),
            "num_heldout": int(self.heldout.shape[0]),
            "has_labels": self.heldout_labels is not None,
            "num_validation": 0 if self.validation is None else int(self.validation.shape[0]),
            "transform": self.transform,
        }

    @property
    def num_features(self) -> int:
        """Number of values in one datapoint."""
        return int(np.prod(self.event_shape))
