"""Checks of prior and likelihood settings shared by every backend (plain Python, no framework).

Both backends validate a component's settings with the same functions, so a bad value
gets the same one-line :class:`~ppvae.errors.UsageError` on either backend, naming the
component and the setting.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from ppvae.errors import UsageError

__all__ = [
    "positive",
    "probability_margin",
    "boolean",
    "count",
    "choice",
    "pseudo_input_support",
    "SCALE_MODES",
    "DISPERSIONS",
    "PSEUDO_INPUT_SUPPORTS",
    "resolve_pseudo_input_support",
    "prior_arguments",
]

#: How a likelihood's scale is set: fixed, one learned value, or one learned value per feature.
SCALE_MODES = ("fixed", "shared", "per_dim")
#: How a negative-binomial likelihood's inverse dispersion is learned.
DISPERSIONS = ("per_feature", "shared")
#: Where a VampPrior's pseudo-inputs live; ``auto`` takes the likelihood's support.
PSEUDO_INPUT_SUPPORTS = ("auto", "unit_interval", "real", "count")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def positive(kind: str, name: str, setting: str, value: Any) -> float:
    """``value`` as a float if it is a finite number > 0, else a UsageError naming the setting."""
    if not (_is_number(value) and value > 0):
        raise UsageError(
            f"{kind} {name!r} needs {setting} > 0, got {value!r}; "
            f"set model.{kind}_options.{setting} to a positive number"
        )
    return float(value)


def probability_margin(kind: str, name: str, setting: str, value: Any) -> float:
    """``value`` as a float in (0, 0.5), else a UsageError naming the setting."""
    if not (_is_number(value) and 0 < value < 0.5):
        raise UsageError(
            f"{kind} {name!r} needs 0 < {setting} < 0.5, got {value!r}; "
            f"set model.{kind}_options.{setting} to a small positive number such as 1e-4"
        )
    return float(value)


def boolean(kind: str, name: str, setting: str, value: Any) -> bool:
    """``value`` if it is a bool, else a UsageError naming the setting."""
    if not isinstance(value, bool):
        raise UsageError(f"{kind} {name!r} needs {setting} = true or false, got {value!r}")
    return value


def count(kind: str, name: str, setting: str, value: Any, minimum: int = 1) -> int:
    """``value`` if it is an integer >= ``minimum``, else a UsageError naming the setting."""
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
        raise UsageError(f"{kind} {name!r} needs {setting} >= {minimum} (an integer), got {value!r}")
    return int(value)


def choice(kind: str, name: str, setting: str, value: Any, valid) -> str:
    """``value`` if it is one of ``valid``, else a UsageError listing them."""
    if value not in valid:
        raise UsageError(f"{kind} {name!r} {setting} = {value!r} is not valid; choose one of: {', '.join(valid)}")
    return value


def pseudo_input_support(value: Any) -> str:
    """A VampPrior's ``data_support`` setting, checked.

    ``"auto"`` is resolved by the model builder (:func:`resolve_pseudo_input_support`); a
    prior built directly with ``"auto"`` assumes nothing about the data (``"real"``).
    """
    value = choice("prior", "vamp", "data_support", value, PSEUDO_INPUT_SUPPORTS)
    return "real" if value == "auto" else value


def resolve_pseudo_input_support(options: dict, likelihood_support: str) -> dict:
    """Prior settings with ``data_support = "auto"`` replaced by the likelihood's support."""
    if options.get("data_support") == "auto" and likelihood_support in PSEUDO_INPUT_SUPPORTS:
        return {**options, "data_support": likelihood_support}
    return dict(options)


def prior_arguments(factory, options: dict, *, latent_dim: int, event_shape, likelihood_support: str) -> dict:
    """The keyword arguments a model builder passes to a prior's factory.

    ``latent_dim`` always; ``event_shape`` only where the constructor names it (the
    VampPrior does; a prior written before it existed need not accept it); the settings,
    with a VampPrior's ``data_support = "auto"`` resolved to the likelihood's support.
    """
    kwargs = {"latent_dim": latent_dim}
    if "event_shape" in inspect.signature(factory).parameters:
        kwargs["event_shape"] = tuple(event_shape)
    return {**kwargs, **resolve_pseudo_input_support(options, likelihood_support)}
