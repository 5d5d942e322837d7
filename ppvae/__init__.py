"""ppvae: variational autoencoders as probabilistic programs.

A VAE is a Pyro model/guide pair (decoder likelihood and prior in the model, amortized
encoder in the guide) trained by stochastic variational inference. The public API:

- :func:`fit` trains a spec on data and writes a run folder; :func:`load` opens one.
- :class:`Run` encodes, decodes, samples, reconstructs and evaluates, and exposes the
  Pyro ``model`` and ``guide`` callables for any ``pyro.infer`` algorithm.
- :func:`register` adds a custom prior, likelihood, encoder or decoder; a
  :class:`Portable` prior or likelihood is written once and runs on every backend.
- :class:`Config` (with :class:`ModelSpec`, :class:`DataSpec`, :class:`TrainSpec`) is a
  validated, TOML-serializable spec.

Importing ppvae does not import torch; the backend loads when first needed.
"""

from ppvae.api import build_config, fit
from ppvae.run import Run, load
from ppvae.spec.config import Config, DataSpec, ModelSpec, TrainSpec
from ppvae.errors import PPVAEError
from ppvae.model.portable import Portable
from ppvae.spec.registry import register

__all__ = [
    "fit",
    "load",
    "Run",
    "build_config",
    "register",
    "Config",
    "ModelSpec",
    "DataSpec",
    "TrainSpec",
    "PPVAEError",
    "Portable",
]
__version__ = "0.1.0"
