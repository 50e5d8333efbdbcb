"""`python -m device_agent` = `edgeq-agent`."""

import sys

from .cli import main

sys.exit(main())
