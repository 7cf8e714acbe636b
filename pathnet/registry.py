"""`Registry`: a name → factory table (models, datasets, pruning methods) with helpful misses."""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from .errors import RegistryError

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """Factories by name; ``registry[name]`` on an unknown name raises RegistryError listing the choices."""

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, F] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator adding `factory` under `name`."""
        def add(factory: F) -> F:
            self._factories[name] = factory
            return factory
        return add

    def alias(self, name: str, target: str) -> None:
        """Let `name` find what `target` finds (an old name kept working; not listed in names())."""
        self._aliases[name] = target

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __getitem__(self, name: str) -> F:
        name = self._aliases.get(name, name) if isinstance(name, str) else name
        if not isinstance(name, str) or name not in self._factories:
            raise RegistryError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}")
        return self._factories[name]

    def __contains__(self, name: object) -> bool:
        return name in self._factories or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._factories)
