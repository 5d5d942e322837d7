"""Built-in priors and likelihoods for the NumPyro backend (mirrors of the Pyro ones).

Importing this module registers them: the priors live in :mod:`.priors`, the likelihoods
in :mod:`.likelihoods`, and :mod:`.kl` adds the closed-form KL divergences the Pyro backend
has and NumPyro lacks, so both backends compute the same analytic-KL ELBO.
"""

from __future__ import annotations

from ppvae.backends.numpyro import kl  # noqa: F401  (KL rules)
from ppvae.backends.numpyro.likelihoods import (  # noqa: F401  (registration)
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
from ppvae.backends.numpyro.priors import (  # noqa: F401  (registration)
    LaplacePrior,
    MixturePrior,
    NormalPrior,
    StudentTPrior,
    VampPrior,
    prior_distribution,
    uses_encoder,
)
