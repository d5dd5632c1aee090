"""Verifiers: the judges behind the answer-correctness reward (see :mod:`.rule`)."""

from .rule import *  # noqa: F401,F403
from .rule import __all__, __getattr__  # noqa: F401
