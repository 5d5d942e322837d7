"""The run folder: what ``ppvae fit`` writes and every other command reads back.

::

    RUN/
      config.toml               fully resolved configuration; `ppvae fit RUN/config.toml` reproduces the run
      data.json                 what the data was and how it was prepared (shape, scaling, split)
      metrics.jsonl             one JSON record per epoch
      checkpoint.safetensors    weights, optimizer state, RNG states, step (no pickle)
      checkpoint-best.safetensors  the epoch with the best validation ELBO (runs with a validation split)
      summary.json              final held-out evaluation and run facts
      samples.png  reconstructions.png  loss.png

Every file is written atomically (temporary file + rename).
"""

from __future__ import annotations

import contextlib

import json
import os
import time
from pathlib import Path

from ppvae.spec.config import Config
from ppvae.errors import CheckpointError, UsageError
from ppvae.inference.checkpoints import BEST_FILENAME, CHOICES, FILENAME
from ppvae.runs.atomic import atomic_write_json, atomic_write_text

__all__ = ["RunFolder", "CONFIG", "DATA", "METRICS", "SUMMARY", "CHECKPOINT", "BEST_CHECKPOINT", "default_run_dir"]

CONFIG = "config.toml"
DATA = "data.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINT = FILENAME
BEST_CHECKPOINT = BEST_FILENAME
PICTURES = ("samples.png", "reconstructions.png", "loss.png")


def default_run_dir() -> Path:
    """``runs/run-YYYYmmdd-HHMMSS`` under the current folder (made unique if taken)."""
    base = Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


class RunFolder:
    """Paths and readers/writers of one run folder.

    Parameters
    ----------
    path : path-like
        The folder.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    # -- creation --------------------------------------------------------------------------
    def prepare_new(self, force: bool = False) -> None:
        """Create the folder for a new run; refuse to overwrite an existing run unless forced."""
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"--out {str(self.path)!r} is a file, not a folder; choose another --out")
        if self.path.is_dir() and any(self.path.iterdir()) and not force:
            raise UsageError(
                f"run folder {str(self.path)!r} already exists and is not empty; continue it with "
                f"--resume {self.path}, overwrite it with --force, or pick another --out"
            )
        if force and self.path.is_dir():
            # Remove only the files a run writes, so nothing else in the folder is lost.
            for name in (CONFIG, DATA, METRICS, SUMMARY, CHECKPOINT, BEST_CHECKPOINT, *PICTURES):
                self.file(name).unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)

    def remove_if_empty(self) -> None:
        """Remove the folder if nothing was written into it (a run that failed before its first file)."""
        with contextlib.suppress(OSError):  # not empty, or already gone: leave it
            self.path.rmdir()

    def check_exists(self) -> None:
        """Raise a clear error unless this looks like a ppvae run folder."""
        if not self.path.is_dir():
            raise CheckpointError(f"run folder {str(self.path)!r} does not exist; give the folder `ppvae fit` wrote")
        if not self.file(CONFIG).is_file():
            raise CheckpointError(
                f"{str(self.path)!r} is not a ppvae run folder (no {CONFIG}); give the folder `ppvae fit` wrote"
            )
        if not self.file(CHECKPOINT).is_file():
            raise CheckpointError(
                f"run folder {str(self.path)!r} has no checkpoint yet (training never finished an epoch); "
                "train it with ppvae fit"
            )

    def choose_checkpoint(self, which: str | None = None) -> str:
        """``"best"`` or ``"last"``: the one asked for, else the best checkpoint when there is one.

        Raises
        ------
        UsageError
            For an unknown choice, or ``"best"`` in a run that has no best checkpoint.
        """
        if which is None:
            return "best" if self.file(BEST_CHECKPOINT).is_file() else "last"
        if which not in CHOICES:
            raise UsageError(f"checkpoint must be one of {', '.join(CHOICES)}, got {which!r}")
        if not self.file(CHOICES[which]).is_file():
            if which == "best":
                raise UsageError(
                    f"run folder {str(self.path)!r} has no best checkpoint (it was trained without a validation "
                    "split: data.validation_fraction); use --checkpoint last"
                )
            self.check_exists()
        return which

    # -- config and data ----------------------------------------------------------------------
    def write_config(self, cfg: Config) -> None:
        atomic_write_text(self.file(CONFIG), cfg.to_toml_string())

    def read_config(self) -> Config:
        return Config.from_toml(self.file(CONFIG))

    def write_data_info(self, info: dict) -> None:
        atomic_write_json(self.file(DATA), info)

    def read_data_info(self) -> dict:
        return self._read_json(DATA)

    # -- metrics and summary --------------------------------------------------------------------
    def write_metrics(self, records: list[dict]) -> None:
        """Rewrite ``metrics.jsonl`` atomically with every record so far."""
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        atomic_write_text(self.file(METRICS), text)

    def read_metrics(self) -> list[dict]:
        path = self.file(METRICS)
        if not path.is_file():
            return []
        try:
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{str(path)!r} is damaged ({exc}); it is rewritten by ppvae fit --resume") from None

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.file(SUMMARY), summary)

    def read_summary(self) -> dict | None:
        return self._read_json(SUMMARY) if self.file(SUMMARY).is_file() else None

    def _read_json(self, name: str) -> dict:
        path = self.file(name)
        if not path.is_file():
            raise CheckpointError(f"{str(path)!r} is missing; is {str(self.path)!r} a complete ppvae run folder?")
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{str(path)!r} is damaged ({exc})") from None
