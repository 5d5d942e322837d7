"""The priors and likelihoods of the NumPyro backend.

The priors and likelihoods of fixed form are written once (:mod:`ppvae.model.priors`,
:mod:`ppvae.model.likelihoods`) and reach this backend through
:func:`ppvae.backends.numpyro.portable.adapt_portable`. Importing this module registers
the one prior that must be written per backend, the VampPrior (:mod:`.priors`), and
:mod:`.kl` adds the closed-form KL divergences the Pyro backend has and NumPyro lacks, so
both backends compute the same analytic-KL ELBO.
"""

from __future__ import annotations

from ppvae.backends.numpyro import kl  # noqa: F401  (KL rules)
from ppvae.backends.numpyro.priors import VampPrior  # noqa: F401  (registration)
