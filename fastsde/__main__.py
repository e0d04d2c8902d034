"""`python -m fastsde`: the fastsde command."""

import sys

from .cli import main

sys.exit(main())
