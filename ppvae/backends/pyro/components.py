"""The priors and likelihoods of the Pyro backend.

The priors and likelihoods of fixed form are written once (:mod:`ppvae.model.priors`,
:mod:`ppvae.model.likelihoods`) and reach this backend through
:func:`ppvae.backends.pyro.portable.adapt_portable`; importing this module registers the
one prior that must be written per backend, the VampPrior (:mod:`.priors`).
"""

from __future__ import annotations

from ppvae.backends.pyro.priors import VampPrior  # noqa: F401  (registration)
