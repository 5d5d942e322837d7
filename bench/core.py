"""Core acceptance figures, measured on this machine (protocol MNIST-10k v1).

1. `ppvae fit` with no arguments, as a user runs it: wall time of the whole command
   (start-up, 30 epochs, evaluation with K = 1000, pictures) and its held-out numbers.
2. Probabilistic PCA on the embedded digits (models/ppca.toml): ELBO, IWAE(K=10),
   IWAE(K=1000) and the exact log p(x), per held-out image.

Usage::

    python bench/core.py            # writes bench/results/core.json and prints Markdown rows

This is a measurement, not a test: a slow machine changes the times, not the verdicts
of the test suite.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTOCOL = "MNIST-10k v1"


def machine() -> dict:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def default_fit() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "ppvae", "fit", "-q", "--out", f"{tmp}/run"], capture_output=True, text=True, cwd=tmp
        )
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        summary = json.loads(Path(tmp, "run", "summary.json").read_text())
    ev = summary["evaluation"]
    return {
        "wall_seconds": wall,
        "train_seconds": summary["train_seconds"],
        "epochs": summary["epochs"],
        "device": summary["device"],
        "heldout_elbo": ev["heldout_elbo"],
        "heldout_log_px": ev["heldout_log_px"],
        "num_samples": ev["num_samples"],
        "images_per_s": summary["final_epoch"]["images_per_s"],
        "stdout": proc.stdout,
    }


def ppca_bounds() -> dict:
    import torch

    import ppvae
    from ppvae.backends.pyro.evaluation import exact_log_px, log_px_iwae

    with tempfile.TemporaryDirectory() as tmp:
        run = ppvae.fit(
            HERE.parent / "models" / "ppca.toml", out=f"{tmp}/ppca", pictures=False, overrides={"train.device": "cpu"}
        )
        vae = run.trained.vae
        x = torch.as_tensor(run.heldout())
        torch.manual_seed(0)
        with torch.no_grad():
            q = vae.posterior(x)
            z = q.sample()
            elbo = (vae.observation(z).log_prob(x) + vae.prior().log_prob(z) - q.log_prob(z)).double()
        out = {
            "elbo_sampled": elbo.mean().item(),
            "iwae_10": log_px_iwae(vae, x, 10).mean().item(),
            "iwae_1000": log_px_iwae(vae, x, 1000).mean().item(),
            "exact": exact_log_px(vae, x).mean().item(),
        }
    out["iwae_1000_gap_percent"] = 100 * (out["exact"] - out["iwae_1000"]) / abs(out["exact"])
    return out


def main() -> None:
    results = {
        "protocol": PROTOCOL,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "default_fit": default_fit(),
        "ppca": ppca_bounds(),
    }
    out = HERE / "results" / "core.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    d, p = results["default_fit"], results["ppca"]
    print(
        f"| `ppvae fit` (no arguments) | {d['device']} | {d['epochs']} | {d['wall_seconds']:.1f} s wall "
        f"({d['train_seconds']:.1f} s training, {d['images_per_s']:.0f} img/s) | "
        f"ELBO {d['heldout_elbo']:.2f} | log p(x) {d['heldout_log_px']:.2f} (K={d['num_samples']}) |"
    )
    print(
        f"| pPCA bounds | ELBO {p['elbo_sampled']:.2f} <= IWAE10 {p['iwae_10']:.2f} <= IWAE1000 "
        f"{p['iwae_1000']:.2f} <= exact {p['exact']:.2f} (gap {p['iwae_1000_gap_percent']:.3f} %) |"
    )


if __name__ == "__main__":
    main()
