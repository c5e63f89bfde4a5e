"""``python -m hf_mpwriter`` is the ``hf-mpwriter`` command."""

import sys

from .cli.main import main

sys.exit(main())
