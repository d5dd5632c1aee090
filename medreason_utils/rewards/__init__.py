"""TRL-compatible reward functions for GRPO (see :mod:`.correctness`)."""

from .correctness import *  # noqa: F401,F403
from .correctness import __all__  # noqa: F401
