"""``python -m autolr.sweep SWEEP_FILE ...``: see ``autolr.sweep``."""

import sys

from autolr.sweep.driver import main

sys.exit(main())
