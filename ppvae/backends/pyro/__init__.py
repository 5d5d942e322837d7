"""The Pyro (PyTorch) backend: networks, components, model/guide, estimators, training.

Importing it registers the built-in components under the ``"pyro"`` backend.
"""

from ppvae.backends.pyro import components, guides, nets  # noqa: F401  (registration)
from ppvae.backends.pyro.portable import adapt_portable
from ppvae.backends.pyro.model import VAE, build_vae
from ppvae.backends.pyro.objectives import VAEObjective, log_weights, terms
from ppvae.backends.pyro.trained import TrainedVAE, fit, load

#: The Backend interface (ppvae.backends.base): the spec's name and the packages a run records.
NAME = "pyro"
PACKAGES = ("torch", "pyro-ppl")

__all__ = [
    "NAME",
    "PACKAGES",
    "adapt_portable",
    "VAE",
    "build_vae",
    "VAEObjective",
    "terms",
    "log_weights",
    "TrainedVAE",
    "fit",
    "load",
]
