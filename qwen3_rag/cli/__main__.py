"""``python -m qwen3_rag.cli``: the same as the ``qwen3-rag`` console script."""

import sys

from qwen3_rag.cli.main import main

sys.exit(main())
