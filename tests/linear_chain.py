"""The two-layer linear-Gaussian model, the exact oracle of the hierarchical VAEs' bounds on both backends.

z2 ~ N(m, diag(s^2)), z1 | z2 ~ N(A z2 + a, diag(s1^2)), x | z1 ~ N(W z1 + b, diag(sigma^2)):
every marginal is Gaussian, so log p(x) is exact, independently of either backend.
"""

from __future__ import annotations

import numpy as np

#: The spec both backends' tests build: linear maps everywhere, a Normal likelihood.
SPEC = dict(
    latent_dim=3,
    latent_layers=(2,),
    likelihood="normal",
    decoder="linear",
    encoder_options={"hidden": []},
    latent_layer_options={"hidden": []},
    likelihood_options={"scale_mode": "shared"},
)


def chain_data(n: int = 2000, seed: int = 0) -> np.ndarray:
    """``n`` rows of 6 features drawn from a two-layer linear-Gaussian model (float32)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2)) @ rng.normal(size=(2, 3)) + 0.3 * rng.normal(size=(n, 3))
    return (z @ rng.normal(size=(3, 6)) + 0.5 * rng.normal(size=(n, 6))).astype(np.float32)


def exact_log_px(x, m, s, A, a, s1, W, b, sigma) -> np.ndarray:
    """log p(x) of each row under the model above (arrays in float64)."""
    from scipy.stats import multivariate_normal

    m, s, A, a, s1, W, b = (np.asarray(v, np.float64) for v in (m, s, A, a, s1, W, b))
    sigma = np.broadcast_to(np.asarray(sigma, np.float64), (W.shape[0],))
    mean1, cov1 = A @ m + a, (A * s**2) @ A.T + np.diag(s1**2)
    return multivariate_normal(W @ mean1 + b, W @ cov1 @ W.T + np.diag(sigma**2)).logpdf(np.asarray(x, np.float64))
