"""`python -m vizdesk` = the `vizdesk` command."""

import sys

from .cli import main

sys.exit(main())
