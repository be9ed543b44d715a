"""``python -m llm_inproc``: the ``llm-inproc`` command line."""

import sys

from .cli import main

sys.exit(main())
