"""``python -m hf_mpwriter`` is the ``hf-mpwriter`` command."""

import sys

from .cli import main

sys.exit(main())
