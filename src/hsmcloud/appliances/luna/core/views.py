"""In-memory views of the state that reload only when a change was committed.

The hot path (every PKCS#11 call checks its login and partition) reads a view, never SQLite:
a view compares the state's commit counter (``ApplianceState.epoch``) with the one it was
loaded at and reloads, under the state's lock, only when it moved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from .state import ApplianceState

T = TypeVar("T")


class View(Generic[T]):
    def __init__(self, state: ApplianceState, load: Callable[[], T]) -> None:
        self._state = state
        self._load = load
        self._epoch = -1
        self._value: T | None = None

    def get(self) -> T:
        if self._epoch != self._state.epoch:
            with self._state.lock:
                epoch = self._state.epoch
                if self._epoch != epoch:
                    self._value = self._load()
                    self._epoch = epoch
        return self._value  # type: ignore[return-value]

    def invalidate(self) -> None:
        self._epoch = -1
