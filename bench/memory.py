"""Peak memory of training on a .npy file larger than memory: streamed, at two dataset sizes.

Writes a ~200 MB and a ~2 GB uint8 .npy of 28x28 images (the real MNIST test digits from
``../shared/data/mnist/``, tiled, each copy with fresh noise so no two rows are equal),
trains each for a fixed number of steps with ``data.stream = true`` in a fresh
subprocess, and reports the child's peak resident memory (``VmHWM``; its ``ru_maxrss`` as
well, which on Linux also holds the parent's peak, carried over fork and exec): the target is a
ratio of at most 1.3 between the two sizes. For contrast, the in-memory path
(``data.stream = false``) on the 200 MB file. The files are deleted afterwards.

Usage::

    python bench/memory.py [--steps 300] [--tmp /tmp] [--out bench/results/memory.json]

The child mode (``--child FILE --stream true|false``) is what the parent runs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MNIST = HERE.parent.parent / "shared" / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"
ROW_BYTES = 28 * 28
SIZES_MB = (200, 2000)  # MB = 10**6 bytes of pixel data


def mnist_digits() -> np.ndarray:
    raw = gzip.decompress(MNIST.read_bytes())
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 28, 28)


def write_file(path: Path, size_mb: int, seed: int = 0) -> int:
    """An MNIST-like uint8 file of ``size_mb`` MB, written in chunks; returns its rows."""
    digits = mnist_digits().astype(np.int16)
    n = size_mb * 10**6 // ROW_BYTES
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 28, 28))
    rng = np.random.default_rng(seed)
    step = len(digits)
    for start in range(0, n, step):
        m = min(step, n - start)
        noise = rng.integers(-24, 25, size=(m, 28, 28), dtype=np.int16)
        out[start : start + m] = np.clip(digits[:m] + noise, 0, 255).astype(np.uint8)
    out.flush()
    del out
    return n


def child(path: str, stream: bool, steps: int, out_dir: str) -> None:
    import ppvae

    started = time.perf_counter()
    overrides = {
        "data.source": path,
        "data.stream": stream,
        "train.device": "cpu",
        "train.batch_size": 128,
        "train.epochs": 1,
    }
    ppvae.fit(out=out_dir, force=True, overrides=overrides, stop_after_steps=steps, pictures=False)
    # VmHWM is this process image's own peak. ru_maxrss would do, except that Linux carries
    # the parent's peak over fork and exec into it.
    status = Path("/proc/self/status").read_text().split("\n")
    hwm_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(
        json.dumps(
            {
                "peak_rss_mib": hwm_kib / 1024,
                "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "seconds": time.perf_counter() - started,
            }
        )
    )


def run_child(path: Path, stream: bool, steps: int, tmp: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [
        sys.executable,
        __file__,
        "--child",
        str(path),
        "--stream",
        "true" if stream else "false",
        "--steps",
        str(steps),
        "--tmp",
        str(tmp),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--tmp", default="/tmp")
    parser.add_argument("--out", default=str(HERE / "results" / "memory.json"))
    parser.add_argument("--child")
    parser.add_argument("--stream", default="true")
    parser.add_argument("--write")
    parser.add_argument("--size-mb", type=int)
    args = parser.parse_args()
    tmp = Path(args.tmp)
    if args.write:
        print(write_file(Path(args.write), args.size_mb))
        return
    if args.child:
        child(args.child, args.stream == "true", args.steps, str(tmp / "ppvae-memory-run"))
        return
    results: dict = {
        "protocol": "synthetic MNIST-tiled uint8 28x28 .npy files (real test digits + uniform "
        "noise in [-24, 24]), Pyro backend, default model (mlp-400, Z = 20), "
        "batch 128, CPU, one fresh process per measurement; peak = the child's VmHWM",
        "steps": args.steps,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_before": os.getloadavg()[0],
        "runs": [],
    }
    files = []
    try:
        for size in SIZES_MB:
            path = tmp / f"ppvae-memory-{size}mb.npy"
            started = time.perf_counter()
            # Written by a subprocess: the pages it touches must not inflate this process.
            cmd = [sys.executable, __file__, "--write", str(path), "--size-mb", str(size)]
            n = int(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()[-1])
            files.append(path)
            print(
                f"wrote {path} ({n} rows, {path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.0f} s",
                flush=True,
            )
        modes = [(SIZES_MB[0], True), (SIZES_MB[1], True), (SIZES_MB[0], False)]
        for size, stream in modes:
            path = tmp / f"ppvae-memory-{size}mb.npy"
            r = run_child(path, stream, args.steps, tmp)
            r.update(
                {
                    "file_mb": round(path.stat().st_size / 1e6),
                    "rows": len(np.load(path, mmap_mode="r")),
                    "stream": stream,
                    "load": os.getloadavg()[0],
                }
            )
            results["runs"].append(r)
            print(json.dumps(r), flush=True)
    finally:
        for path in files:
            path.unlink(missing_ok=True)
        shutil.rmtree(tmp / "ppvae-memory-run", ignore_errors=True)
    small, large = results["runs"][0], results["runs"][1]
    results["ratio_2gb_to_200mb_streamed"] = large["peak_rss_mib"] / small["peak_rss_mib"]
    results["target_ratio"] = 1.3
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"peak RSS streamed: {small['peak_rss_mib']:.0f} MiB (200 MB file), {large['peak_rss_mib']:.0f} MiB "
        f"(2 GB file): ratio {results['ratio_2gb_to_200mb_streamed']:.2f} (target <= 1.3); in memory, "
        f"200 MB file: {results['runs'][2]['peak_rss_mib']:.0f} MiB"
    )


if __name__ == "__main__":
    main()
