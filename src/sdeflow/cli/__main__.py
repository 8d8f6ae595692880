"""``python -m sdeflow.cli`` (and ``torchrun ... -m sdeflow.cli train``)."""
import sys

from . import main

sys.exit(main())
