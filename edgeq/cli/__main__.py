"""`python -m edgeq.cli.commands` = `edgeq`."""

from edgeq.cli.commands import main

main()
