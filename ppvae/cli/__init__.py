"""The ``ppvae`` command line: click commands that parse, call the API and print.

``app`` holds the group and its one error boundary; ``options`` declares the options that
several commands share, once; ``outputs`` writes results (never overwriting without
``--force``). One module per command group: ``fit``; ``run_commands`` (evaluate, sample,
reconstruct, encode, decode); ``analysis`` (score, compare, diagnose); ``models``; ``plot``.
"""

from ppvae.cli.app import cli, main
from ppvae.cli.options import with_plugins

__all__ = ["cli", "main", "with_plugins"]
