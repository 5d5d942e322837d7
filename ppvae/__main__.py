"""``python -m ppvae`` runs the command line."""

from .cli import main

main()
