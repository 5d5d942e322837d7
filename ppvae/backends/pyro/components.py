"""Built-in priors p(z) and likelihoods p(x|z) for the Pyro backend.

Importing this module registers them: the priors live in :mod:`.priors`, the likelihoods
in :mod:`.likelihoods`. A prior returns a distribution over one latent vector; it is
called ``prior()``, or ``prior(encoder)`` when its class attribute ``uses_encoder`` is true
(use :func:`prior_distribution`). A likelihood turns the decoder's output into a
distribution over one datapoint; its ``param_shape`` tells the decoder how many outputs to
produce and its ``support`` tells the data checks which values are valid.
"""

from __future__ import annotations

from ppvae.backends.pyro.likelihoods import (  # noqa: F401  (registration)
    SCALE_MODES,
    BernoulliLikelihood,
    BetaLikelihood,
    CategoricalLikelihood,
    ContinuousBernoulliLikelihood,
    LaplaceLikelihood,
    Likelihood,
    NegativeBinomialLikelihood,
    NormalLikelihood,
    PoissonLikelihood,
    ZINBLikelihood,
)
from ppvae.backends.pyro.priors import (  # noqa: F401  (registration)
    LaplacePrior,
    MixturePrior,
    NormalPrior,
    StudentTPrior,
    VampPrior,
    prior_distribution,
    uses_encoder,
)
