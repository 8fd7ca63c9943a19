"""``python -m hpo`` runs the CLI."""

from hpo.cli import main

main()
