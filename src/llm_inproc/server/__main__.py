"""``python -m llm_inproc.server``: the same server as ``llm-inproc serve``."""

import sys

from .run import main

sys.exit(main())
