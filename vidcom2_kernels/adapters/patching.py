"""The one way this package changes a model or a config for a while: set attributes, and put
back exactly what was there (an instance attribute, a value behind a property, or nothing, so
the class's own attribute shows again). Used for ``model.generate`` (the handle's lifetime),
``get_video_features`` (one call, transformers < 5.18) and the attention implementation (DyCoke's
KV pruning, one call)."""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable, Iterable

#: (object, attribute name, value)
Patch = tuple

_MISSING = object()


def _before(obj, name: str) -> Any:
    """What restoring ``name`` must put back: the instance's own value, the value behind a
    property, or _MISSING (delete the instance attribute)."""
    if name in getattr(obj, "__dict__", {}):
        return obj.__dict__[name]
    if hasattr(inspect.getattr_static(type(obj), name, None), "__set__"):
        return getattr(obj, name)
    return _MISSING


def install(patches: Iterable[Patch]) -> Callable[[], None]:
    """Set every ``(obj, name, value)``; returns the function that undoes them, in reverse order."""
    saved = []

    def undo() -> None:
        while saved:
            obj, name, before = saved.pop()
            if before is _MISSING:
                delattr(obj, name)
            else:
                setattr(obj, name, before)

    try:
        for obj, name, value in patches:
            saved.append((obj, name, _before(obj, name)))
            setattr(obj, name, value)
    except BaseException:
        undo()
        raise
    return undo


@contextlib.contextmanager
def installed(patches: Iterable[Patch]):
    """:func:`install` for the duration of a ``with`` block."""
    undo = install(patches)
    try:
        yield
    finally:
        undo()
