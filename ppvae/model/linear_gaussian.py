"""The exact log p(x) of the linear-Gaussian VAE (probabilistic PCA), for both backends.

With z ~ N(m, diag(s^2)) and x | z ~ N(W z + b, diag(sigma^2)), the marginal is
x ~ N(W m + b, W diag(s^2) W^T + diag(sigma^2)). A conditional model's decoder is
``W z + V one_hot(y) + b``: log p(x|y) has its mean shifted by ``V one_hot(y)``. Every
bound an estimator computes must sit below this figure, which makes the model the
reference for the estimators' tests.
"""

from __future__ import annotations

import math

import numpy as np

from ppvae.model.likelihoods import NormalLikelihood
from ppvae.model.priors import NormalPrior

__all__ = ["is_linear_gaussian", "exact_log_px"]


def is_linear_gaussian(prior, likelihood) -> bool:
    """Whether a prior and a likelihood module (either backend) are the Normal ones that make log p(x) exact.

    The decoder must be linear too; the backend checks its own network class.
    """
    return isinstance(getattr(prior, "spec", None), NormalPrior) and isinstance(
        getattr(likelihood, "spec", None), NormalLikelihood
    )


def exact_log_px(x, weight, bias, prior_loc, prior_scale, noise_scale, y=None) -> np.ndarray:
    """log p(x) (log p(x|y) given labels) of each row of ``x`` under the linear-Gaussian model.

    Parameters
    ----------
    x : array, shape (n, *event_shape)
    weight : array, shape (D, Z) or (D, Z + C)
        The linear decoder's weight; columns past Z multiply ``one_hot(y)``.
    bias : array, shape (D,)
    prior_loc, prior_scale : array, shape (Z,)
    noise_scale : array broadcastable to the event shape
        The Normal likelihood's scale.
    y : array of int, shape (n,), optional
        Labels of a conditional model.

    Returns
    -------
    numpy.ndarray, shape (n,), float64
    """
    weight = np.asarray(weight, np.float64)
    mu, s = np.asarray(prior_loc, np.float64), np.asarray(prior_scale, np.float64)
    W, V = weight[:, : mu.shape[0]], weight[:, mu.shape[0] :]
    d = W.shape[0]
    x = np.asarray(x, np.float64)
    sigma = np.broadcast_to(np.asarray(noise_scale, np.float64), x.shape[1:]).reshape(d)
    cov = (W * s**2) @ W.T + np.diag(sigma**2)
    diff = x.reshape(len(x), d) - (W @ mu + np.asarray(bias, np.float64))
    if y is not None and V.shape[1]:
        diff = diff - V.T[np.asarray(y).astype(int)]
    chol = np.linalg.cholesky(cov)
    sol = np.linalg.solve(chol, diff.T)
    return -0.5 * (sol**2).sum(0) - np.log(np.diag(chol)).sum() - 0.5 * d * math.log(2 * math.pi)
