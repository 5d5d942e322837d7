"""Backend-agnostic pieces of a training loop: state, signals, progress, fingerprints.

Both backends' trainers use these, so interruption, progress display and checkpoint
compatibility behave the same whatever the backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import signal
import threading
from dataclasses import dataclass, field

if TYPE_CHECKING:  # annotations only: the inference layer sits below the spec
    from ppvae.spec.config import Config
from ppvae.errors import TrainingError

__all__ = [
    "TrainState",
    "SignalCatcher",
    "Interrupted",
    "progress_bar",
    "fingerprint",
    "HELDOUT_NOISE_SEED",
    "interrupted_message",
    "nonfinite_error",
]

#: Seed of the noise used for the per-epoch held-out ELBO, so epochs are comparable.
HELDOUT_NOISE_SEED = 12345


class Interrupted(TrainingError):
    """Training was stopped by SIGINT/SIGTERM after saving a checkpoint."""

    exit_code = 130


def fingerprint(cfg: Config, event_shape) -> str:
    """Identifies the parameter layout: the model spec, the data's shape and the backend."""
    return f"{cfg.fingerprint()}-{'x'.join(map(str, event_shape))}-{cfg.train.backend}"


@dataclass
class TrainState:
    """Where training stands; everything a checkpoint needs besides arrays."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches completed within the current epoch
    step: int = 0  # optimizer steps completed
    records: list = field(default_factory=list)
    partial: list = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])  # loss, rec, kl, count
    partial_seconds: float = 0.0

    def meta(self) -> dict:
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "records": self.records,
            "partial": self.partial,
            "partial_seconds": self.partial_seconds,
        }

    @classmethod
    def from_meta(cls, meta: dict) -> "TrainState":
        return cls(
            epoch=meta["epoch"],
            batch=meta["batch"],
            step=meta["step"],
            records=meta["records"],
            partial=meta["partial"],
            partial_seconds=meta.get("partial_seconds", 0.0),
        )


class SignalCatcher:
    """Turns SIGINT/SIGTERM into a flag the loop checks, so a checkpoint is saved first."""

    def __init__(self):
        self.caught: int | None = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.caught = signum

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        return False


def interrupted_message(signum: int, step: int, epoch: int, run_dir) -> str:
    name = signal.Signals(signum).name
    return (
        f"{name} received: stopped at step {step} (epoch {epoch}) and saved a checkpoint; "
        f"continue with: ppvae fit --resume {run_dir}"
    )


def progress_bar(total: int, desc: str, enabled: bool, unit: str = "step"):
    """A tqdm bar (hidden when ``enabled`` is false)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, disable=not enabled, dynamic_ncols=True)


def nonfinite_error(what: str, epoch: int, records: list, checkpoint_exists: bool, run_dir, lr: float) -> TrainingError:
    """The one message of a training run stopped by non-finite values, on every backend.

    ``what`` says what became non-finite and at which step; ``epoch`` is 1-based; the last
    of ``records`` is the epoch whose checkpoint was kept, if one was written.
    """
    last = records[-1] if records else None
    kept = (
        f"kept the last good checkpoint (epoch {last['epoch']}, step {last['step']})"
        if last and checkpoint_exists
        else "no checkpoint had been written yet"
    )
    return TrainingError(
        f"training stopped: {what} (epoch {epoch}); {kept} in {str(run_dir)!r}. "
        f"Try a lower learning rate (--lr, now {lr:g}), a smaller --beta, or standardized data "
        "for a normal likelihood, then --resume"
    )
