"""What the dock widgets of one viewer share: the case, the model and the current explanation."""

from __future__ import annotations

import weakref

from psygnal import Signal


class Session:
    """Per-viewer state. ``explanation_changed`` fires (main thread) when a run finishes."""

    explanation_changed = Signal(object)

    def __init__(self):
        self.case = None
        self.model = None
        self.explanation = None

    def set_explanation(self, exp) -> None:
        self.explanation = exp
        self.explanation_changed.emit(exp)


_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def session_for(viewer) -> Session:
    s = _SESSIONS.get(viewer)
    if s is None:
        s = _SESSIONS[viewer] = Session()
    return s
