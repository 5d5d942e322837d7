"""Data-dependent initial weights, shared by both backends' trainers (plain numpy).

``train.init_decoder_bias = true`` starts the decoder's output bias at the training data's
marginal: for a Bernoulli likelihood, the log-odds of each feature's mean, so the untrained
decoder already draws the average image, whatever z is. The IWAE paper's code starts its
networks so. Without it the decoder's first epochs learn that average from the bias alone,
and a VampPrior with tanh networks settles there with the KL at 0 (the posterior collapses
and stays collapsed, on both backends; ``models/vamp-tanh.toml`` has the measured runs).
"""

from __future__ import annotations

import numpy as np

from ppvae.errors import UsageError

__all__ = ["INIT_BIAS_LIKELIHOODS", "INIT_BIAS_DECODERS", "init_bias_refusal", "decoder_output_bias"]

#: Likelihoods whose decoder output has a known inverse of the mean (Bernoulli: its logits).
INIT_BIAS_LIKELIHOODS = ("bernoulli",)
#: Decoders whose output layer has one bias per output value.
INIT_BIAS_DECODERS = ("mlp", "linear")

# Keeps the log-odds of a feature that is always 0 (or 1) in the training data finite.
_MARGIN = 1e-3
_STREAMED = "train.init_decoder_bias reads the training split's mean, which data.stream = true does not hold in memory"


def init_bias_refusal(likelihood: str, decoder: str, stream: bool) -> str | None:
    """Why ``train.init_decoder_bias`` cannot start this model, or ``None``."""
    if likelihood not in INIT_BIAS_LIKELIHOODS:
        return (
            f"train.init_decoder_bias sets a Bernoulli decoder's logits to the data's log-odds; model.likelihood = "
            f'"{likelihood}" has no such inverse here: use likelihood bernoulli or drop train.init_decoder_bias'
        )
    if decoder not in INIT_BIAS_DECODERS:
        return f'train.init_decoder_bias needs a decoder with one output bias per value (mlp or linear), not model.decoder = "{decoder}"'
    return _STREAMED if stream else None


def decoder_output_bias(train, likelihood: str) -> np.ndarray:
    """The decoder's initial output bias: the log-odds of each feature's training mean, flattened, float32.

    Parameters
    ----------
    train : numpy.ndarray, shape (n, *event_shape)
        The training split in memory (values in [0, 1] for a Bernoulli likelihood); streamed
        rows are refused.
    likelihood : str
        The model's likelihood (one of :data:`INIT_BIAS_LIKELIHOODS`).
    """
    if not isinstance(train, np.ndarray):  # data.stream = "auto" chose to stream
        raise UsageError(_STREAMED)
    if likelihood not in INIT_BIAS_LIKELIHOODS:
        raise UsageError(init_bias_refusal(likelihood, INIT_BIAS_DECODERS[0], stream=False))
    mean = np.clip(train.reshape(len(train), -1).mean(axis=0, dtype=np.float64), _MARGIN, 1 - _MARGIN)
    return np.log(mean / (1 - mean)).astype(np.float32)
