"""The one way this package changes a model or a config for a while: set attributes, and put
back exactly what was there (an instance attribute, a value behind a property, or nothing, so
the class's own attribute shows again). Used for ``model.generate`` and ``get_video_features``
(the handle's lifetime), lmms-eval's ``generate_until`` (the launcher's run) and the attention
implementation (DyCoke's KV pruning, one call)."""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable, Iterable

#: (object, attribute name, value)
Patch = tuple


class _Missing:
    """ "No instance attribute was there": one object, kept as itself by copies (a deep copy of a
    patched model restores its own attributes the same way)."""

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


MISSING = _Missing()


def saved_value(obj, name: str) -> Any:
    """What restoring ``name`` must put back: the instance's own value, the value behind a
    property, or MISSING (delete the instance attribute)."""
    if name in getattr(obj, "__dict__", {}):
        return obj.__dict__[name]
    if hasattr(inspect.getattr_static(type(obj), name, None), "__set__"):
        return getattr(obj, name)
    return MISSING


class Undo:
    """Puts back what :func:`install` changed, in reverse order; a second call does nothing. An
    object, not a closure, so that ``copy.deepcopy`` of a patched model gives an ``Undo`` of the copy."""

    def __init__(self):
        self.saved = []  # (obj, name, what was there before)

    def __call__(self) -> None:
        while self.saved:
            obj, name, before = self.saved.pop()
            if before is MISSING:
                delattr(obj, name)
            else:
                setattr(obj, name, before)


def install(patches: Iterable[Patch]) -> Callable[[], None]:
    """Set every ``(obj, name, value)``; returns the :class:`Undo` of them."""
    undo = Undo()
    try:
        for obj, name, value in patches:
            undo.saved.append((obj, name, saved_value(obj, name)))
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
