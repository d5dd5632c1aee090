"""Stage settings and paths of the checkout (see :mod:`.stages`)."""

from .stages import *  # noqa: F401,F403
from .stages import __all__  # noqa: F401
