"""The table of estimators: the one place that names them.

Config validation, the CLI's ``--elbo`` and ``--elbos`` choices and help, ``compare`` and
both backends read this table. A new estimator is one entry here plus its implementation
in each backend's objectives.

Examples
--------
>>> from ppvae.inference import estimator, estimator_names
>>> estimator_names()
('meanfield', 'trace', 'iwae', 'dreg')
>>> estimator("iwae").importance_weighted
True
"""

from __future__ import annotations

from dataclasses import dataclass

from ppvae.errors import UsageError

__all__ = [
    "free_bits_refusal",
    "free_bits_factor_refusal",
    "Estimator",
    "ESTIMATORS",
    "estimator",
    "estimator_names",
    "importance_weighted_names",
    "help_text",
    "dreg_unsupported",
]


@dataclass(frozen=True)
class Estimator:
    """One training objective and what it promises.

    Parameters
    ----------
    name : str
        The spec's ``train.elbo`` value.
    bound : str
        What its loss is minus (a lower bound on log p(x) for every entry here).
    summary : str
        One line for ``--help`` and the docs.
    importance_weighted : bool
        Whether ``train.num_particles`` is the K of an importance-weighted bound (the
        bound tightens with K). Otherwise the particles are averaged into a plain ELBO.
    analytic_kl : bool
        Whether it uses the closed-form KL(q || p) where the prior and guide have one.
    gaussian_guide_only : bool
        Whether it needs a reparameterized Gaussian q(z|x) (DReG rewrites its score).
    backends : tuple of str
        The backends that implement it.
    """

    name: str
    bound: str
    summary: str
    importance_weighted: bool = False
    analytic_kl: bool = False
    gaussian_guide_only: bool = False
    backends: tuple[str, ...] = ("pyro", "numpyro")


#: name -> Estimator, in the order the CLI and the docs list them (the first is the default).
ESTIMATORS: dict[str, Estimator] = {
    e.name: e
    for e in (
        Estimator("meanfield", "ELBO", "analytic KL where the prior and guide have one", analytic_kl=True),
        Estimator("trace", "ELBO", "sampled ELBO"),
        Estimator("iwae", "IWAE bound (K samples)", "importance-weighted bound", importance_weighted=True),
        Estimator(
            "dreg",
            "IWAE bound (K samples)",
            "the iwae bound with doubly-reparameterized, lower-variance encoder gradients",
            importance_weighted=True,
            gaussian_guide_only=True,
        ),
    )
}


def estimator_names() -> tuple[str, ...]:
    """Return every estimator's name, in table order."""
    return tuple(ESTIMATORS)


def importance_weighted_names() -> tuple[str, ...]:
    """Return the names whose ``num_particles`` is the K of an importance-weighted bound."""
    return tuple(name for name, e in ESTIMATORS.items() if e.importance_weighted)


def estimator(name: str) -> Estimator:
    """Return the table entry for ``name``.

    Raises
    ------
    UsageError
        For an unknown name, listing the valid ones.
    """
    try:
        return ESTIMATORS[name]
    except (KeyError, TypeError):
        raise UsageError(f"unknown estimator {name!r}; valid: {', '.join(ESTIMATORS)}") from None


def help_text() -> str:
    """One sentence listing every estimator and what it is, for ``--help``."""
    parts = [f"{e.name} ({e.summary}{', default' if i == 0 else ''})" for i, e in enumerate(ESTIMATORS.values())]
    return ", ".join(parts[:-1]) + " or " + parts[-1] + "."


def dreg_unsupported(distribution_class: str, site: str) -> UsageError:
    """The error both backends raise when DReG meets a guide whose log q it cannot stop.

    ``distribution_class`` is the class name of the guide's distribution at ``site``.
    """
    flow = " (a flow, as model.guide = iaf builds)" if "Transformed" in distribution_class else ""
    return UsageError(
        f"estimator 'dreg' needs log q(z|x) at stopped guide parameters, which ppvae forms for Gaussian guides "
        f"(Normal, MultivariateNormal, LowRankMultivariateNormal: model.guide = diagonal, lowrank or fullrank), "
        f"not for this guide's {distribution_class}{flow} at site {site!r}; choose a Gaussian guide, or --elbo iwae"
    )


def free_bits_refusal(estimator_name: str) -> str | None:
    """Why ``train.free_bits`` cannot apply to this estimator, or ``None`` when it can.

    Free bits (Kingma et al. 2016, "Improved variational inference with inverse
    autoregressive flow", eq. 15) replace the KL term of the ELBO by
    ``sum_d max(lambda, E_batch[KL_d])``: a latent dimension whose average KL over the
    minibatch is below ``lambda`` nats gets no gradient pushing it further towards the prior,
    so it is not switched off early in training. The floor acts on the KL term, which only
    the ELBO estimators have; the importance-weighted bounds mix the KL into log w.
    """
    if estimator(estimator_name).importance_weighted:
        return (
            f'train.free_bits floors the KL term of the ELBO, which train.elbo = "{estimator_name}" does not have '
            "(its bound mixes the KL into the importance weights); use --elbo meanfield or trace, or free_bits = 0"
        )
    return None


def free_bits_factor_refusal(what: str, name: str) -> str:
    """The message for a guide or prior that does not factorize over the latent dimensions."""
    return (
        f"train.free_bits floors the KL of each latent dimension, so the {what} must factorize over them "
        f"(a diagonal guide; a normal, laplace or student_t prior); this {what} is {name}: set train.free_bits = 0"
    )
