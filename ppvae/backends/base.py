"""The Backend interface: what the API needs from an inference backend, and nothing more.

A backend is a package under ``ppvae.backends`` (loaded by name with
:func:`ppvae.spec.registry.load_backend`) whose top level provides the names below. The API
calls a backend only through this interface, so a third backend implements exactly this.
This module imports no framework: the API may import it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = ["Backend"]


@runtime_checkable
class Backend(Protocol):
    """An inference backend, as the API sees it.

    Attributes
    ----------
    NAME : str
        The name a spec's ``train.backend`` gives (``"pyro"``, ``"numpyro"``).
    PACKAGES : tuple of str
        The distributions whose versions a run records in ``summary.json`` (beside
        Python, numpy and ppvae), e.g. ``("torch", "pyro-ppl")``.
    """

    NAME: str
    PACKAGES: tuple[str, ...]

    def fit(
        self,
        cfg: Any,
        dataset: Any,
        run_dir: Path,
        *,
        resume: bool = False,
        progress: bool = True,
        on_start: Callable[[], None] | None = None,
        on_epoch: Callable[[list], None] | None = None,
        stop_after_steps: int | None = None,
    ) -> tuple[Any, list[dict]]:
        """Train (or continue training) into ``run_dir``; return the trained model and the epoch records."""

    def load(self, run_dir: Path, cfg: Any, event_shape: tuple, device: str = "auto", which: str = "last") -> Any:
        """Rebuild the trained model of a run folder from its checkpoint (never by unpickling).

        ``which`` is ``"last"`` (where training stands) or ``"best"`` (the epoch with the
        best validation ELBO, :data:`ppvae.inference.checkpoints.BEST_FILENAME`).

        The trained model (also the first value ``fit`` returns) has ``compile_seconds``: the
        seconds spent compiling before training, which the run's summary records (0 where
        the backend compiles nothing ahead of the first step).
        """

    def adapt_portable(self, kind: str, cls: type) -> Callable[..., Any]:
        """Translate a :class:`ppvae.Portable` prior or likelihood class into this backend's factory."""
