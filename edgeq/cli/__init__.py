"""The `edgeq` command line: thin click commands (commands.py) and their text output (render.py)."""

from edgeq.cli.commands import cli, main

__all__ = ["cli", "main"]
