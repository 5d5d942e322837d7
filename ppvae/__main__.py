"""``python -m ppvae`` runs the command line."""

from ppvae.cli import main

main()
