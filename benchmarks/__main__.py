"""``python -m benchmarks``: the same suite as ``llm-inproc bench`` (same flags)."""

from __future__ import annotations

import sys

from llm_inproc.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
