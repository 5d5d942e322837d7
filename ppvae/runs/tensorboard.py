"""TensorBoard event files of a run's epoch records (``train.log = "tensorboard"``).

Each epoch's record (``metrics.jsonl``) is written as scalars under ``RUN/tensorboard/``,
by epoch, whichever backend trained it: watch a run with ``tensorboard --logdir RUN``.
A resumed run adds a new event file holding the epochs it trains; TensorBoard joins them.
Writing needs the optional ``tensorboard`` extra (tensorboardX, which writes the event
format without TensorFlow): ``pip install 'ppvae[tensorboard]'``.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

from ppvae.errors import UsageError

__all__ = ["DIRNAME", "tag", "require_tensorboard", "TensorBoardLog"]

#: The folder in a run that holds the event files.
DIRNAME = "tensorboard"

#: Record keys that are bookkeeping, not curves.
_SKIPPED = {"epoch", "step", "seconds"}

_TAGS = {
    "loss": "train/loss",
    "reconstruction": "train/reconstruction",
    "kl": "kl/z",
    "beta": "train/beta",
    "lr": "optimizer/lr",
    "grad_norm": "optimizer/grad_norm",
    "images_per_s": "speed/images_per_s",
}


def tag(key: str) -> str:
    """The TensorBoard tag of a record key: ``train/...``, ``validation/...``, ``kl/<site>``, ``optimizer/...``.

    Examples
    --------
    >>> tag("validation_elbo"), tag("kl"), tag("kl_z2"), tag("lr")
    ('validation/elbo', 'kl/z', 'kl/z2', 'optimizer/lr')
    """
    if key in _TAGS:
        return _TAGS[key]
    if key.startswith("kl_"):  # one KL per latent site
        return f"kl/{key[3:]}"
    split, _, name = key.partition("_")
    return f"{split}/{name}" if name else key


def require_tensorboard() -> None:
    """Raise a one-line UsageError unless the ``tensorboard`` extra is installed."""
    if importlib.util.find_spec("tensorboardX") is None:
        raise UsageError(
            'train.log = "tensorboard" writes TensorBoard event files with tensorboardX, which is not '
            "installed: pip install 'ppvae[tensorboard]' (or train without --log tensorboard)"
        )


class TensorBoardLog:
    """Writes each new epoch record of a run as TensorBoard scalars, stepped by epoch.

    Parameters
    ----------
    run_dir : path-like
        The run folder; the event files go to its ``tensorboard/`` folder.
    logged : int
        Epochs already written by an earlier session of this run (a resume).

    Called with the list of records after every epoch (the trainers' ``on_epoch``).
    """

    def __init__(self, run_dir: str | Path, logged: int = 0):
        from tensorboardX import SummaryWriter

        self.path = Path(run_dir) / DIRNAME
        self.logged = logged
        # tensorboardX names a file by the second it opens and truncates one of the same name:
        # a resume within that second would erase the earlier session's curves, so each
        # session's file also names the first epoch it writes.
        self._writer = SummaryWriter(logdir=str(self.path), flush_secs=30, filename_suffix=f".from-epoch-{logged + 1}")

    def __call__(self, records: list[dict]) -> None:
        for record in records[self.logged :]:
            for key, value in record.items():
                if key in _SKIPPED or isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                if math.isfinite(value):
                    self._writer.add_scalar(tag(key), value, record["epoch"])
            if "reconstruction" in record and "kl" in record:
                self._writer.add_scalar("train/elbo", -(record["reconstruction"] + record["kl"]), record["epoch"])
        self.logged = len(records)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
