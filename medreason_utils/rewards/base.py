"""What every reward function shares: the TRL signature, a stable name, its settings as attributes."""

from __future__ import annotations

from typing import Any, Callable, Mapping

__all__ = ["RewardFunc", "named", "has_options"]

#: TRL's reward-function signature: ``(completions, **dataset_columns) -> list[float | None]``.
RewardFunc = Callable[..., list]


def named(fn: Callable, name: str, *, doc: str | None = None, **attrs: Any) -> Callable:
    """Give ``fn`` a stable ``__name__`` (TRL logs ``rewards/<name>/mean``), a docstring and settings attributes.

    ``doc`` replaces the docstring (a reward factory fills in its settings, so ``help(fn)`` or
    ``fn?`` in Colab describes the function actually built). Returns ``fn``.
    """
    fn.__name__ = name
    fn.__qualname__ = name
    if doc is not None:
        fn.__doc__ = doc
    for k, v in attrs.items():
        setattr(fn, k, v)
    return fn


def has_options(options: Any) -> bool:
    """Whether a row's ``options`` value holds at least one option text (an open-ended row has none)."""
    if not options:
        return False
    values = options.values() if isinstance(options, Mapping) else options if isinstance(options, (list, tuple)) else [options]
    return any(v is not None and str(v).strip() for v in values)
