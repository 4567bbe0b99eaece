"""``python -m hpac``: the command line (:mod:`hpac.tools.cli`)."""
import sys

from .tools.cli import main

sys.exit(main())
