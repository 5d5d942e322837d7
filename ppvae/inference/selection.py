"""Which epoch to keep: the best checkpoint and early stopping, chosen on the validation split.

Both are decided from the epoch records alone (each carries ``validation_elbo`` when the
run has a validation split). The records travel in every checkpoint, so a resumed run
makes the same choices as an uninterrupted one, and both backends make them the same way.
The held-out split never enters: choosing epochs on it would make its figures dishonest.

Examples
--------
>>> records = [{"epoch": e, "validation_elbo": v} for e, v in enumerate([-120.0, -110.0, -110.2, -109.95], 1)]
>>> best_epoch(records)
4
>>> best_epoch(records, min_delta=0.1)   # -109.95 is not 0.1 nats better than -110
2
>>> should_stop(records, patience=2, min_delta=0.1)
True
"""

from __future__ import annotations

import math

__all__ = ["MONITORED", "best_epoch", "is_new_best", "should_stop", "selection_note"]

#: The record key the choice is made on: the per-datapoint ELBO of the validation split.
MONITORED = "validation_elbo"


def best_epoch(records: list[dict], min_delta: float = 0.0) -> int | None:
    """The epoch whose validation ELBO last beat the best before it by more than ``min_delta`` nats.

    ``None`` when no record has a (finite) validation ELBO: the run has no validation split.
    """
    best, best_value = None, -math.inf
    for record in records:
        value = record.get(MONITORED)
        if value is None or not math.isfinite(value):
            continue
        if best is None or value > best_value + min_delta:
            best, best_value = record["epoch"], value
    return best


def is_new_best(records: list[dict], min_delta: float = 0.0) -> bool:
    """Whether the last record is the best epoch so far (its weights become the best checkpoint)."""
    return bool(records) and best_epoch(records, min_delta) == records[-1]["epoch"]


def should_stop(records: list[dict], patience: int, min_delta: float = 0.0) -> bool:
    """Whether ``patience`` epochs have passed without an improvement (``patience = 0``: never)."""
    if patience <= 0 or not records:
        return False
    best = best_epoch(records, min_delta)
    return best is not None and records[-1]["epoch"] - best >= patience


def selection_note(records: list[dict], patience: int, min_delta: float = 0.0) -> str | None:
    """One line on what was chosen, for ``fit``'s output; ``None`` without a validation split."""
    best = best_epoch(records, min_delta)
    if best is None:
        return None
    value = next(r[MONITORED] for r in records if r["epoch"] == best)
    stopped = (
        f"stopped early after epoch {records[-1]['epoch']} ({patience} epochs without a gain of more "
        f"than {min_delta:g} nats); "
        if should_stop(records, patience, min_delta)
        else ""
    )
    return f"{stopped}best validation ELBO {value:.2f} at epoch {best}: its weights are the best checkpoint"
