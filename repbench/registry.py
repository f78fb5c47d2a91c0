"""One generic registry: learners, datasets and metrics are each an instance of it.

Names are unique (a second registration of a name is refused), lookups of unknown names say what exists and
suggest the closest match, and a registry may also pull entries from a Python entry-point group so other
packages can add to it without forking repbench.
"""
from __future__ import annotations

import difflib
import fnmatch
import warnings
from importlib.metadata import entry_points
from typing import Any, Generic, Iterator, TypeVar

from .errors import RepbenchError

T = TypeVar("T")


def unknown_name(kind: str, name: str, known) -> str:
    """The error for a name that is not registered: the closest known name, if any, then all of them."""
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean '{close[0]}'? (available: " if close else "; available: "
    return f"unknown {kind} '{name}'{hint}{', '.join(known)}" + (")" if close else "")


class UnknownNameError(RepbenchError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class PluginWarning(UserWarning):
    pass


class Registry(Generic[T]):
    def __init__(self, kind: str, entry_point_group: str | None = None, check=None, without_install=None):
        self.kind = kind
        self.group = entry_point_group
        self.check = check  # check(name, obj) raises RepbenchError to refuse an entry
        # without_install(registry) registers the built-in entries when repbench itself is not installed (its
        # source tree on PYTHONPATH), so its own entry points are missing
        self.without_install = without_install
        self._items: dict[str, T] = {}
        self._origin: dict[str, str] = {}
        self._plugins_loaded = entry_point_group is None

    def register(self, name: str, obj: T | None = None, *, origin: str = "repbench"):
        """Register `obj` under `name`; usable as a decorator when `obj` is omitted."""
        if obj is None:
            return lambda o: self.register(name, o, origin=origin) or o
        if name in self._items:
            raise RepbenchError(
                f"{self.kind} '{name}' from {origin} is already registered (by {self._origin[name]})")
        if self.check is not None:
            self.check(name, obj)
        self._items[name] = obj
        self._origin[name] = origin
        return obj

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        # repbench's own entries first, so a plugin can never displace a built-in name
        eps = sorted(entry_points(group=self.group), key=lambda e: (e.dist is None or e.dist.name != "repbench"))
        if self.without_install is not None and not any(e.dist and e.dist.name == "repbench" for e in eps):
            self.without_install(self)
        for ep in eps:
            origin = f"plugin '{ep.value}'" + (f" ({ep.dist.name})" if ep.dist else "")
            if ep.name in self._items and self._origin[ep.name] == origin:
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin must not take repbench down with it
                warnings.warn(f"{self.kind} plugin '{ep.name}' = {ep.value} failed to import: "
                              f"{type(exc).__name__}: {exc}", PluginWarning, stacklevel=2)
                continue
            try:
                self.register(ep.name, obj, origin=origin)
            except RepbenchError as exc:
                warnings.warn(f"{exc}; plugin entry ignored", PluginWarning, stacklevel=2)

    def get(self, name: str) -> T:
        self._load_plugins()
        if name not in self._items:
            raise UnknownNameError(unknown_name(self.kind, name, self.names()))
        return self._items[name]

    def names(self, pattern: str = "*") -> list[str]:
        self._load_plugins()
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def origin(self, name: str) -> str:
        self.get(name)
        return self._origin[name]

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._items[n]) for n in self.names()]

    def in_order(self) -> list[tuple[str, T]]:
        """Entries in the order they were registered (built-ins first, then plugins)."""
        self._load_plugins()
        return list(self._items.items())


def check_options(kind: str, name: str, given: dict[str, Any], allowed: dict[str, Any] | list[str]) -> None:
    """Refuse options a component does not take, naming the valid ones."""
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(allowed), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise RepbenchError(f"{kind} '{name}' takes no option {', '.join(repr(u) for u in unknown)}{hint}; "
                            f"its options: {', '.join(sorted(allowed)) or 'none'}")

