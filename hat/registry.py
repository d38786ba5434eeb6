"""One registry shape for every pluggable part: a name -> class or function table.

Search algorithms, scorers, export formats, timing backends and predictor models each keep one
`Registry`; a plug-in registers with `@REGISTRY.register("name")` (or `register("name", obj)`),
a second registration under the same name is refused, and an unknown name is one ConfigError
that lists the known ones. Command-line choices come from `names()`.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar, overload

from hat.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name, obj=None):
        """Add `obj` under `name` (usable as a decorator); a taken name raises ValueError."""
        def add(o: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered ({self._items[name]!r})")
            self._items[name] = o
            return o

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """The entry called `name`; an unknown name is a ConfigError listing the choices."""
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r} (choose {', '.join(self.names())})") from None

    __getitem__ = get

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
