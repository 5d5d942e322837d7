"""A plug-in: a heavy-tailed Student-t prior with a learned scale, for every backend.

Registered as the prior ``heavy_tailed``: StudentT(df, 0, s) on every latent dimension,
with the scale s learned per dimension and the degrees of freedom df a setting. It is a
``ppvae.Portable``, so this one definition trains on the pyro and the numpyro backend.
(ppvae's built-in ``student_t`` prior is a different component: this file shows how a
prior of your own is written and loaded.)

Load it from a spec (``plugins = ["plugins/student_t_prior.py"]``, relative to the spec,
as in ``models/student-t-prior.toml``) or on the command line::

    ppvae fit --plugin models/plugins/student_t_prior.py --prior heavy_tailed \\
        --set model.prior_options.df=3
"""

import numpy as np

import ppvae
from ppvae.errors import UsageError


@ppvae.register("prior", "heavy_tailed")
class HeavyTailedPrior(ppvae.Portable):
    """Student-t(df, 0, s) on every latent dimension, scale s learned (plug-in models/plugins/student_t_prior.py)."""

    def __init__(self, latent_dim, df=4.0, scale=1.0):
        if not (isinstance(df, (int, float)) and df > 0):
            raise UsageError(f"prior 'heavy_tailed' needs df > 0, got {df!r}; set model.prior_options.df")
        if not (isinstance(scale, (int, float)) and scale > 0):
            raise UsageError(f"prior 'heavy_tailed' needs scale > 0, got {scale!r}; set model.prior_options.scale")
        self.constant("df", np.full(latent_dim, float(df)))
        self.constant("loc", np.zeros(latent_dim))
        # Learned on the log scale so that the scale stays positive without a constraint.
        self.param("log_scale", np.full(latent_dim, np.log(scale)))

    def distribution(self, dist, ops, p):
        return dist.StudentT(p["df"], p["loc"], ops.exp(p["log_scale"])).to_event(1)
