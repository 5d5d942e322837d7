"""Schedules of training: the KL weight β by step, and the learning rate by epoch.

Every β schedule stays strictly positive (β = 0 would drop the prior, and Pyro rejects a
zero scale), starting at ``beta / length`` and reaching ``beta``.

The learning rate is a function of the epoch alone (:func:`lr_at`), so a resumed run
continues its schedule exactly; each backend applies the same table of rates (the Pyro
trainer sets it on the optimizer at each epoch, NumPyro's optax schedule reads it by step).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the inference layer sits below the spec
    from ppvae.spec.config import TrainSpec

__all__ = ["beta_at", "lr_at", "lr_table"]

# The IWAE paper's schedule (Burda et al. 2016, section 5): 3**i epochs at lr * 10**(-i/7).
_IWAE_STAGES = 8


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


def lr_at(epoch: int, train: TrainSpec) -> float:
    """The learning rate of every step of epoch ``epoch`` (0-based).

    - ``constant``: ``lr``.
    - ``exponential``: ``lr * lr_decay ** (epoch / lr_step_epochs)`` (smooth decay).
    - ``step``: ``lr * lr_decay ** floor(epoch / lr_step_epochs)``.
    - ``cosine``: a linear warm-up ``lr * (epoch + 1) / lr_warmup_epochs`` over the first
      ``lr_warmup_epochs``, then half a cosine from ``lr`` down to ``lr_min`` over the rest
      of ``epochs``.
    - ``iwae``: the IWAE paper's ``3**i`` epochs at ``lr * 10**(-i/7)`` for i = 0..7 (3,280
      epochs in all), then the last rate.

    Examples
    --------
    >>> from ppvae.spec.config import TrainSpec
    >>> lr_at(25, TrainSpec(lr=1e-3, lr_schedule="step", lr_decay=0.5, lr_step_epochs=10))
    0.00025
    """
    lr, schedule = train.lr, train.lr_schedule
    if schedule == "constant":
        return lr
    if schedule == "exponential":
        return lr * train.lr_decay ** (epoch / train.lr_step_epochs)
    if schedule == "step":
        return lr * train.lr_decay ** (epoch // train.lr_step_epochs)
    if schedule == "cosine":
        warmup = train.lr_warmup_epochs
        if epoch < warmup:
            return lr * (epoch + 1) / warmup
        span = max(1, train.epochs - warmup)
        progress = min(1.0, (epoch - warmup) / span)
        return train.lr_min + (lr - train.lr_min) * 0.5 * (1.0 + math.cos(math.pi * progress))
    stage, start = 0, 0
    while stage < _IWAE_STAGES - 1 and epoch >= start + 3**stage:
        start += 3**stage
        stage += 1
    return lr * 10 ** (-stage / 7)


def lr_table(train: TrainSpec, epochs: int | None = None) -> list[float]:
    """:func:`lr_at` for every epoch of training (``train.epochs`` unless ``epochs`` is given)."""
    return [lr_at(e, train) for e in range(train.epochs if epochs is None else epochs)]
