"""``ppvae fit --num-processes N``: the same command on N local processes, under torchrun's launcher.

The command relaunches itself through torch's elastic launcher (the engine behind
``torchrun``: a standalone rendezvous on a free local port, N workers, no restarts).
Every worker runs the ordinary ``python -m ppvae fit`` with the other arguments and
finds its place in the job in the environment (see :mod:`.distributed`), so this is
exactly ``torchrun --nproc-per-node N -m ppvae fit ...``.

The workers' output goes to log files; rank 0's is relayed to this terminal as it comes
(progress bars included), up to its first error line. When a worker fails, torch's agent
stops the others and this module turns the failure into one line: the worker's own
message where it wrote one (a usage or data error), otherwise which process died and
how, with the last checkpoint (written atomically, so intact) and the command that
continues from it.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from ppvae.errors import UsageError
from ppvae.backends.pyro.distributed import PEER_LOST

__all__ = ["check_processes", "launch_fit"]

# Worker lines that stop the live relay: what follows is reported once, at the end.
_HOLD = (b"Error: ", b"Traceback (most recent call last)")
# torch prefixes the lines of an uncaught exception in a worker with "[rankN]: ".
_RANK_PREFIX = re.compile(rb"^\[rank\d+\]:\s*")
# A failure that is only the consequence of another process vanishing.
_SECONDARY = (
    PEER_LOST,
    "SIGTERM received",
    "Connection closed by peer",
    "Connection reset by peer",
    "DistBackendError",
    "Broken pipe",
)


def check_processes(num_processes: int, backend: str, device: str) -> None:
    """Refuse a process count that cannot work, with what to do instead.

    Raises
    ------
    UsageError
        Fewer than one process; another backend than pyro; a CUDA device with fewer GPUs
        than processes, or one named GPU for several processes.
    """
    import torch

    if num_processes < 1:
        raise UsageError(f"--num-processes must be at least 1, got {num_processes}")
    if num_processes == 1:
        return
    if backend != "pyro":
        raise UsageError(
            f"--num-processes is for the pyro backend; the {backend} backend spreads each batch "
            "over several devices in one process instead: --num-devices N"
        )
    if device.startswith("cuda") and ":" in device:
        raise UsageError(
            f"--device {device} names one GPU, but {num_processes} processes each take their own "
            "(process r uses cuda:r): use --device cuda, and CUDA_VISIBLE_DEVICES to choose the GPUs"
        )
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "cuda" and gpus < num_processes:
        raise UsageError(
            f"--num-processes {num_processes} with --device cuda needs {num_processes} GPUs, but "
            f"{gpus} are visible; use --num-processes {gpus}"
            if gpus
            else "--device cuda: CUDA is not available here; use --device cpu"
        )
    if device == "auto" and 0 < gpus < num_processes:
        raise UsageError(
            f"--num-processes {num_processes}: {gpus} GPU(s) are visible, one per process is needed; "
            f"use --num-processes {gpus}, or --device cpu"
        )


class _Relay:
    """Copies rank 0's log files to this terminal while the job runs, holding back its errors."""

    def __init__(self, log_dir: str):
        self.log_dir = log_dir
        self.targets = {"stdout.log": sys.stdout, "stderr.log": sys.stderr}
        self.offsets = {name: 0 for name in self.targets}
        self.pending = {name: b"" for name in self.targets}
        self.held = {name: b"" for name in self.targets}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def files(self, local_rank: int, name: str) -> list[str]:
        return glob.glob(os.path.join(self.log_dir, "*", "attempt_*", str(local_rank), name))

    def _loop(self) -> None:
        while not self.stop.wait(0.1):
            self.pump()

    def pump(self, final: bool = False) -> None:
        for name, target in self.targets.items():
            found = self.files(0, name)
            if not found:
                continue
            with open(found[0], "rb") as fh:
                fh.seek(self.offsets[name])
                data = fh.read()
            self.offsets[name] += len(data)
            data = self.pending[name] + data
            # Whole segments only (ended by a newline or a progress bar's carriage return).
            cut = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
            if final:
                cut = len(data)
            done, self.pending[name] = data[:cut], data[cut:]
            if self.held[name]:
                self.held[name] += done
                continue
            out = b""
            for seg in done.splitlines(keepends=True):
                if self.held[name] or _RANK_PREFIX.sub(b"", seg.lstrip(b"\r")).startswith(_HOLD):
                    self.held[name] += seg
                else:
                    out += seg
            if out:
                target.write(out.decode(errors="replace"))
                target.flush()

    def finish(self, release_held: bool) -> dict[str, str]:
        """Stop relaying; print what was held back if ``release_held``; return it by stream."""
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()
        self.pump(final=True)
        held = {name: text.decode(errors="replace") for name, text in self.held.items()}
        if release_held:
            for name, text in held.items():
                if text:
                    self.targets[name].write(text)
                    self.targets[name].flush()
        return held


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]


def _checkpoint_note(run_dir: Path, num_processes: int) -> str:
    from ppvae.inference.checkpoints import load_arrays
    from ppvae.backends.pyro.checkpoint import FILENAME
    from ppvae.runs.folder import RunFolder

    path = Path(run_dir) / FILENAME
    if not path.is_file():
        return f"No checkpoint was written to {str(run_dir)!r}; start the job again"
    try:
        _, meta = load_arrays(path)
    except Exception as exc:  # noqa: BLE001 - reported, not raised: the job already failed
        return f"The checkpoint {str(path)!r} could not be read ({exc})"
    # A process killed between the checkpoint and the metrics write leaves metrics.jsonl an
    # epoch behind; the checkpoint carries every record, so the folder is made to agree with
    # the checkpoint it reports (a resume starts from it).
    try:
        RunFolder(run_dir).write_metrics(meta["records"])
    except OSError as exc:
        return f"The last checkpoint (epoch {meta['epoch']}) is intact but metrics.jsonl could not be rewritten ({exc})"
    return (
        f"The last checkpoint (epoch {meta['epoch']}, step {meta['step']}) in {str(run_dir)!r} is intact; "
        f"continue with: ppvae fit --resume {run_dir} --num-processes {num_processes}"
    )


def _report(failures: dict, world: int, held0: str, relay: _Relay, run_dir: Path) -> tuple[str, int]:
    """The one line for a failed job, and the exit code.

    The root cause comes first: a process killed by a signal, then one that stopped with
    its own error message, then one that crashed; a process that only lost its partner
    (or was stopped by the agent) is reported only when nothing else explains the failure.
    """
    infos = []
    for rank, f in sorted(failures.items()):
        if f.local_rank == 0:
            err = held0
        else:
            files = relay.files(f.local_rank, "stderr.log")
            err = Path(files[0]).read_text(errors="replace") if files else ""
        lines = [_RANK_PREFIX.sub(b"", line.encode()).decode() for line in _lines(err)]
        error_line = next((line for line in reversed(lines) if line.startswith("Error: ")), None)
        last = lines[-1] if lines else ""
        stopped = f.exitcode < 0 and f.signal_name() in ("SIGTERM", "SIGINT")  # by the agent, after another
        secondary = stopped or any(s in err for s in _SECONDARY)
        infos.append((rank, f, error_line, last, secondary))

    def died(info):
        f = info[1]
        return f.exitcode < 0 and f.signal_name() not in ("SIGTERM", "SIGINT")

    ranked = (
        [i for i in infos if died(i)] + [i for i in infos if i[2] and not i[4]] + [i for i in infos if not i[4]] + infos
    )
    rank, f, error_line, last, secondary = ranked[0]
    if f.exitcode > 0 and error_line and not secondary:
        # The worker said what is wrong itself (a usage, data or training error).
        return error_line, f.exitcode
    what = (
        f"was killed by {f.signal_name()}"
        if f.exitcode < 0
        else f"exited with code {f.exitcode}" + (f" ({last[:160]})" if last else "")
    )
    return (
        f"Error: process {rank} of {world} {what}; the other processes were stopped. {_checkpoint_note(run_dir, world)}"
    ), 1


def launch_fit(args: list[str], num_processes: int, run_dir: str | Path) -> int:
    """Run ``python -m ppvae fit ARGS`` as ``num_processes`` local workers of one job.

    Parameters
    ----------
    args : list of str
        The ``fit`` arguments for every worker (without ``--num-processes``); they must
        name the run folder (``--out`` or ``--resume``), so all workers agree on it.
    num_processes : int
        Workers on this machine (CPU: gloo; CUDA: one GPU each).
    run_dir : path
        The run folder, for the failure message.

    Returns
    -------
    int
        The exit code for the command: 0 when every worker succeeded.

    Examples
    --------
    >>> launch_fit(["--epochs", "2", "--out", "runs/ddp"], 2, "runs/ddp")   # doctest: +SKIP
    0
    """
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # Share the cores out rather than let every worker start one thread per core.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // num_processes)))
    log_dir = tempfile.mkdtemp(prefix="ppvae-launch-")
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=num_processes,
        run_id=f"ppvae-{uuid.uuid4().hex[:8]}",
        # Standalone: the rendezvous store listens on a free local port.
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        max_restarts=0,
        monitor_interval=0.1,
        logs_specs=DefaultLogsSpecs(log_dir=log_dir, redirects=Std.ALL, tee=Std.NONE),
    )
    # Every torch.distributed logger has its own level, so each is quietened, not just the parent.
    loggers = [
        logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if name.startswith("torch.distributed")
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:  # the agent's own log lines are replaced by the one-line report
        lg.setLevel(logging.CRITICAL)
    relay = _Relay(log_dir)
    relay.thread.start()
    try:
        elastic_launch(config, sys.executable)("-m", "ppvae", "fit", *args)
    except ChildFailedError as exc:
        held = relay.finish(release_held=False)
        line, code = _report(exc.failures, num_processes, held["stderr.log"], relay, Path(run_dir))
        sys.stderr.write(line + "\n")
        return code
    except SignalException as exc:
        held = relay.finish(release_held=False)
        errors = [line for line in _lines(held["stderr.log"]) if line.startswith("Error: ")]
        name = signal.Signals(exc.sigval).name
        sys.stderr.write(
            (
                errors[-1]
                if errors
                else f"Error: {name} received: the job was stopped; {_checkpoint_note(Path(run_dir), num_processes)}"
            )
            + "\n"
        )
        return 130
    else:
        relay.finish(release_held=True)
        return 0
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        # Give the log files a moment to be released before they go.
        time.sleep(0.05)
        shutil.rmtree(log_dir, ignore_errors=True)
