"""``python -m srweb.cli``: the same as the ``srweb`` command."""

import sys

from srweb.cli import main

sys.exit(main())
