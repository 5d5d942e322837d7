"""β schedules: the KL weight as a function of the training step.

Every schedule stays strictly positive (β = 0 would drop the prior, and Pyro rejects a
zero scale), starting at ``beta / length`` and reaching ``beta``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the inference layer sits below the spec
    from ppvae.spec.config import TrainSpec

__all__ = ["beta_at"]


def beta_at(step: int, train: TrainSpec) -> float:
    """β for the optimization step ``step`` (0-based).

    - ``constant``: ``beta``.
    - ``linear``: ``beta * min(1, (step + 1) / warmup_steps)`` (KL warm-up).
    - ``cyclical``: the linear ramp over the first half of every ``cycle_steps``, then
      ``beta`` for the second half (Fu et al. 2019, "Cyclical Annealing Schedule").

    Examples
    --------
    >>> from ppvae.spec.config import TrainSpec
    >>> beta_at(0, TrainSpec(beta=2.0, beta_schedule="linear", warmup_steps=4))
    0.5
    >>> beta_at(10, TrainSpec(beta=2.0, beta_schedule="linear", warmup_steps=4))
    2.0
    """
    if train.beta_schedule == "constant":
        return train.beta
    if train.beta_schedule == "linear":
        return train.beta * min(1.0, (step + 1) / train.warmup_steps)
    ramp = max(1, train.cycle_steps // 2)
    return train.beta * min(1.0, (step % train.cycle_steps + 1) / ramp)
