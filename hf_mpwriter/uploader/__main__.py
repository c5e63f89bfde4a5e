"""``python -m hf_mpwriter.uploader LOGDIR``: the uploader process (see :mod:`hf_mpwriter.uploader.loop`)."""

import sys

from .process import main

sys.exit(main())
