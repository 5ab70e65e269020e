"""``python -m bastion.demo``: the command-line walk-through of the demo bank."""

import sys

from bastion.demo import main

sys.exit(main())
