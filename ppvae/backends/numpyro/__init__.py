"""The NumPyro (JAX) backend: the same specs, sites, estimators and run folders as Pyro's.

Networks are Equinox modules registered with ``numpyro.contrib.module.eqx_module``;
optimization is optax's Adam; the whole epoch is one jit-compiled ``lax.scan``.
Importing it registers the built-in components under the ``"numpyro"`` backend.
"""

from ppvae.backends.numpyro import components, guides, nets  # noqa: F401  (registration)
from ppvae.backends.numpyro.convert import jax_view, params_from_torch
from ppvae.backends.numpyro.gaps import local_gaps
from ppvae.backends.numpyro.reference import compare_to_q, nuts_reference
from ppvae.backends.numpyro.portable import adapt_portable
from ppvae.backends.numpyro.model import VAE, build_vae, initial_params
from ppvae.backends.numpyro.objectives import VAEObjective, log_weights, terms
from ppvae.backends.numpyro.trained import TrainedVAE, fit, load

#: The Backend interface (ppvae.backends.base): the spec's name and the packages a run records.
NAME = "numpyro"
PACKAGES = ("jax", "jaxlib", "numpyro", "equinox", "optax")

__all__ = [
    "NAME",
    "PACKAGES",
    "adapt_portable",
    "VAE",
    "build_vae",
    "initial_params",
    "VAEObjective",
    "terms",
    "log_weights",
    "TrainedVAE",
    "fit",
    "load",
    "params_from_torch",
    "jax_view",
    "local_gaps",
    "nuts_reference",
    "compare_to_q",
]
