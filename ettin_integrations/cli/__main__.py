"""``python -m ettin_integrations.cli``: the ``ettin-rerank`` command."""

import sys

from . import main

sys.exit(main())
