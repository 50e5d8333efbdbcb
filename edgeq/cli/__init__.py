"""The `edgeq` command line: thin click commands (commands.py, rollout.py) and their text output
(render.py)."""

from edgeq.cli import firmware as _firmware  # noqa: F401  (registers `edgeq firmware`)
from edgeq.cli import rollout as _rollout  # noqa: F401  (registers `edgeq rollout`)
from edgeq.cli.commands import cli, main

__all__ = ["cli", "main"]
