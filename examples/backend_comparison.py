"""The same VAE trained by Pyro (PyTorch) and by NumPyro (JAX), side by side.

``ppvae.analysis.compare.compare`` (the Python side of ``ppvae compare``) trains the benchmark's
reference VAE (models/mlp-400.toml) with every backend and estimator on the same data
split and seeds, then prints one table: wall time, images per second, held-out ELBO,
held-out log p(x), KL and active units, each as mean ± spread over seeds, with a mark
where a row is worse than the best by more than the seed-to-seed spread. It writes
``comparison.md``, ``comparison.json`` and ``comparison.png`` (held-out ELBO against
training time: which backend reaches a good model sooner) into ``--out``.

    python examples/backend_comparison.py                  # 2 backends x 3 seeds x 10 epochs, a few minutes on 2 cores
    python examples/backend_comparison.py --tiny           # a smoke run (300 digits, 1 epoch, 1 seed), seconds
    python examples/backend_comparison.py --elbos meanfield,iwae --seeds 0,1

The same comparison from the shell::

    ppvae compare models/mlp-400.toml --backends pyro,numpyro --seeds 0,1,2 --epochs 10 --out runs/backends
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ppvae.analysis.compare import compare
from ppvae.data.standard import save_embedded_sample

SPEC = Path(__file__).resolve().parents[1] / "models" / "mlp-400.toml"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="300 digits, tiny networks, 1 epoch, 1 seed: seconds")
    parser.add_argument("--out", default="runs/backend-comparison", help="folder for the runs and the comparison")
    parser.add_argument("--backends", default="pyro,numpyro", help="comma-separated backends (default: both)")
    parser.add_argument("--elbos", default="meanfield", help="comma-separated estimators: meanfield, trace, iwae")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2; tiny: 0)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default 10; tiny: 1)")
    args = parser.parse_args(argv)
    out = Path(args.out)

    # K = 200 importance samples keep the held-out log p(x) of every run to seconds; the
    # table states K, and `ppvae evaluate RUN -k 5000` tightens any single run later.
    overrides = {"train.eval_num_samples": 200}
    if args.tiny:
        overrides = {
            "data.source": save_embedded_sample(out),
            "train.batch_size": 64,
            "train.eval_num_samples": 10,
            "model.encoder_options.hidden": [32],
            "model.decoder_options.hidden": [32],
        }
    result = compare(
        SPEC,
        backends=args.backends,
        elbos=args.elbos,
        seeds=args.seeds or ("0" if args.tiny else "0,1,2"),
        epochs=args.epochs or (1 if args.tiny else 10),
        out=out,
        overrides=overrides,
        force=True,
        echo=print,
    )
    print()
    print(result.to_markdown())
    print(f"table: {result.markdown_path}\nnumbers: {result.json_path}\nELBO against time: {result.plot_path}")
    return result


if __name__ == "__main__":
    main()
