"""Automatic names for symbols: ``mx.name.NameManager`` and ``mx.name.Prefix``."""
from __future__ import annotations

import threading


class NameManager:
    """Gives ``op0``, ``op1``... names to unnamed symbols; ``with NameManager():`` scopes it."""

    _local = threading.local()

    def __init__(self):
        self._counter: dict[str, int] = {}
        self._old = None

    def get(self, name: str | None, hint: str) -> str:
        """``name`` if given, else ``hint`` with a fresh number."""
        if name:
            return name
        n = self._counter.get(hint, 0)
        self._counter[hint] = n + 1
        return f"{hint}{n}"

    def __enter__(self):
        self._old = NameManager.current()
        NameManager._local.value = self
        return self

    def __exit__(self, *exc):
        NameManager._local.value = self._old

    @staticmethod
    def current() -> NameManager:
        cur = getattr(NameManager._local, "value", None)
        if cur is None:
            cur = NameManager._local.value = NameManager()
        return cur


class Prefix(NameManager):
    """A NameManager that puts ``prefix`` before every name it makes."""

    def __init__(self, prefix: str):
        super().__init__()
        self._prefix = prefix

    def get(self, name, hint):
        return self._prefix + super().get(name, hint)


def current() -> NameManager:
    """The NameManager in force."""
    return NameManager.current()
