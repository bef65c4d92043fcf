"""One registry type for every pluggable kind: methods, models, datasets, optimisers, schedules, noise modes.

A :class:`Registry` maps names (and, for kinds that have them, aliases) to objects with a little
information each (a description at least). Every kind has one registry, owned by the module that
defines the kind, and public query functions in front of it (``list_methods``, ``get_dataset``, ...;
see ``dsink list``). Config validation, the command line and the training code all read the
registry, so a new entry is one decorated function or class::

    from dsink import register_dataset

    @register_dataset("toy", description="two Gaussian blobs")
    def load_toy(cfg):          # cfg: the run's DataConfig
        ...                     # return a dsink.data.Source

This module imports nothing from the package but :mod:`dsink.errors`.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Generic, Iterator, TypeVar

from .errors import InputError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named objects of one kind, with their information and aliases.

    Parameters
    ----------
    kind : str
        What an entry is, in the singular (``"dataset"``, ``"noise mode"``); error messages use it.
    plural : str, optional
        The word before the list of valid names in errors (default ``kind + "s"``).
    error_order : {"sorted", "registered"}
        Order of the names an unknown-name error lists (aliases follow, sorted); ``registered`` keeps
        the order of registration, for kinds whose order means something (noise modes).
    """

    def __init__(self, kind: str, plural: str | None = None, *, error_order: str = "sorted"):
        if error_order not in ("sorted", "registered"):
            raise ValueError(f"error_order must be 'sorted' or 'registered', got {error_order!r}")
        self.kind = kind
        self.plural = plural or kind + "s"
        self.error_order = error_order
        self._entries: dict[str, T] = {}
        self._info: dict[str, dict[str, Any]] = {}
        self._aliases: dict[str, str] = {}

    # ------------------------------------------------------------------ registering
    def register(self, name: str, obj: T | None = None, *, aliases: tuple[str, ...] = (), **info: Any):
        """Add ``obj`` under ``name`` with its ``info`` (``description=...`` and any other facts).

        Without ``obj`` it returns a decorator: ``@registry.register("name", description="...")``.
        A name or alias already taken is a ``ValueError`` (a programming error, not user input).
        """
        if obj is None:

            def deco(o: T) -> T:
                self.register(name, o, aliases=aliases, **info)
                return o

            return deco
        aliases = tuple(aliases)
        for n in (name, *aliases):
            if not isinstance(n, str) or not n:
                raise ValueError(f"a {self.kind} name must be a non-empty string, got {n!r}")
            if n in self._entries or n in self._aliases:
                raise ValueError(f"{self.kind} {n!r} is already registered; unregister it first")
        if len(set(aliases)) != len(aliases) or name in aliases:
            raise ValueError(f"{self.kind} {name!r}: repeated aliases {aliases}")
        self._entries[name] = obj
        self._info[name] = {"description": "", **info}
        self._aliases.update((a, name) for a in aliases)
        return obj

    def unregister(self, name: str) -> T:
        """Remove ``name`` (a registered name, not an alias) and its aliases; returns its object."""
        if name not in self._entries:
            raise KeyError(f"{self.kind} {name!r} is not registered")
        self._info.pop(name)
        for a in [a for a, n in self._aliases.items() if n == name]:
            del self._aliases[a]
        return self._entries.pop(name)

    # ------------------------------------------------------------------ querying
    def resolve(self, name: str) -> str:
        """The registered name of ``name`` or of its alias; InputError listing the valid names otherwise."""
        if isinstance(name, str):
            if name in self._entries:
                return name
            if name in self._aliases:
                return self._aliases[name]
        names = list(self._entries) if self.error_order == "registered" else sorted(self._entries)
        valid = ", ".join(names + sorted(self._aliases))
        raise InputError(f"unknown {self.kind} {name!r}; valid {self.plural}: {valid}")

    def get(self, name: str) -> T:
        """The object registered under ``name`` (or an alias of it); InputError naming the valid names."""
        return self._entries[self.resolve(name)]

    def info(self, name: str) -> dict[str, Any]:
        """``{"name", "description", "aliases", ...}`` of an entry (a copy; aliases sorted)."""
        canon = self.resolve(name)
        aliases = tuple(sorted(a for a, n in self._aliases.items() if n == canon))
        return {"name": canon, **self._info[canon], "aliases": aliases}

    def list(self, filter: str | None = None, **where: Any) -> list[str]:
        """Registered names, sorted; ``filter`` is a shell-style pattern (``"resnet*"``) and ``where``
        keeps entries whose information has those values (``role="noise"``)."""
        names = sorted(self._entries)
        if filter is not None:
            names = fnmatch.filter(names, filter)
        return [n for n in names if all(self._info[n].get(k) == v for k, v in where.items())]

    def names(self) -> tuple[str, ...]:
        """Registered names in the order of registration."""
        return tuple(self._entries)

    def aliases(self) -> dict[str, str]:
        """``{alias: registered name}`` (a copy)."""
        return dict(self._aliases)

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"

