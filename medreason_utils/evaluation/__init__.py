"""Evaluation: benchmarks, scoring, the multi-model runner and its reports (see :mod:`.runner`)."""

from .runner import *  # noqa: F401,F403
from .runner import __all__  # noqa: F401
