"""Tiny name -> factory registries, so every component is chosen by the paper's name."""
from __future__ import annotations

from typing import Any, Callable


class UnknownNameError(ValueError):
    """Raised for a name that no registry entry has; the message lists the valid names."""


class Registry:
    """A named collection of factories: ``register(name)`` decorator, ``create(name, **kw)``, ``names()``."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, help: str | None = None):
        def decorator(factory: Callable[..., Any]):
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = factory
            doc = help or (factory.__doc__ or "").strip().splitlines()
            self._help[name] = doc if isinstance(doc, str) else (doc[0] if doc else "")
            return factory

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._entries:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; valid {self.kind} names: {', '.join(self.names())}"
            )
        return self._entries[name]

    def create(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def describe(self) -> dict[str, str]:
        """Name -> one-line description (first docstring line of the factory)."""
        return {name: self._help[name] for name in self.names()}

    def __contains__(self, name: str) -> bool:
        return name in self._entries
