"""Posterior diagnostics: how good is q(z|x)? (PSIS k-hat, NUTS reference, gaps, collapse.)

ArviZ is reached only through :mod:`.arviz_io`; JAX work (NUTS, per-point optimization)
lives in the NumPyro backend.
"""

from ppvae.analysis.diagnostics.diagnose import Diagnostics, diagnose

__all__ = ["diagnose", "Diagnostics"]
