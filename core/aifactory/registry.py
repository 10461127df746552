"""One registry shape for architectures, bricks, post-processing ops, tasks, metrics, acquisitions.

An entry is a name, a typed parameter model (a :class:`~aifactory.config.StrictModel` with defaults
and field descriptions) and a callable. YAML refers to entries by name; ``--list`` prints them with
their parameters; third parties add entries through a Python entry-point group: the entry point is
loaded (imported) and registers its entries with the ``register`` decorator as built-ins do.

Built-in entries live in modules that may import heavy libraries (torch), so a registry imports them
only when it is first queried.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import UnionType
from typing import Any, Generic, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel

from aifactory.config import StrictModel, validate
from aifactory.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])


class NoParams(StrictModel):
    """An entry without parameters."""


def type_name(annotation: Any) -> str:
    """Readable type of a parameter: ``int``, ``list[str]``, ``'mean'|'max'`` for a Literal."""
    if get_origin(annotation) is Literal:
        return "|".join(repr(arg) for arg in get_args(annotation))
    if get_args(annotation) and get_origin(annotation) is not None:
        inner = ", ".join(type_name(arg) for arg in get_args(annotation))
        origin = get_origin(annotation)
        if origin in (Union, UnionType):
            return " | ".join(type_name(arg) for arg in get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


@dataclass(frozen=True)
class Entry(Generic[F]):
    """A registered name with its parameter model and callable."""

    name: str
    params: type[BaseModel]
    func: F
    doc: str

    def parse_params(self, raw: Mapping[str, Any] | None, where: str) -> BaseModel:
        """Validate raw parameters; errors name ``where`` (file and key path)."""
        return validate(self.params, dict(raw or {}), where)

    def describe(self) -> str:
        """``name  p1=default (type), p2 (type, required) — doc`` on one line."""
        parts = []
        for field_name, field in self.params.model_fields.items():
            annotation = type_name(field.annotation)
            if field.is_required():
                parts.append(f"{field_name} ({annotation}, required)")
            else:
                parts.append(f"{field_name}={field.get_default(call_default_factory=True)!r} ({annotation})")
        params = ", ".join(parts) if parts else "-"
        return f"{self.name}  {params}  — {self.doc}"


class Registry(Generic[F]):
    """Named entries of one kind, filled by built-in modules and by an entry-point group."""

    def __init__(self, kind: str, group: str, builtin_modules: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.group = group
        self._builtin_modules = builtin_modules
        self._entries: dict[str, Entry[F]] = {}
        self._loaded = False

    def register(self, name: str, params: type[BaseModel] = NoParams) -> Callable[[F], F]:
        """Decorator: register ``func`` under ``name``; its docstring's first line is the summary."""

        def decorator(func: F) -> F:
            if name in self._entries and self._entries[name].func is not func:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            doc = inspect.getdoc(func) or ""
            self._entries[name] = Entry(name, params, func, doc.splitlines()[0] if doc else "")
            return func

        return decorator

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._builtin_modules:
            importlib.import_module(module)
        for ep in entry_points(group=self.group):
            try:
                ep.load()
            except Exception as exc:  # a broken third-party plugin must not hide the built-ins
                raise ConfigError(f"entry point {ep.name!r} of group {self.group} failed to load: {exc}") from exc

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[F]]:
        self._load()
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def get(self, name: str, where: str = "") -> Entry[F]:
        """The entry called ``name``; an unknown name is a :class:`ConfigError` with suggestions."""
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._entries, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(self.names())}"
            prefix = f"{where}: " if where else ""
            raise ConfigError(f"{prefix}unknown {self.kind} {name!r}{hint}") from None

    def resolve(self, spec: str | Mapping[str, Any], where: str) -> tuple[Entry[F], BaseModel]:
        """Resolve ``"name"`` or ``{"name": ..., **params}`` (or ``{name: {params}}``) to entry + params."""
        name, raw = self.split_spec(spec, where)
        entry = self.get(name, where)
        return entry, entry.parse_params(raw, f"{where}.{name}" if where else name)

    def split_spec(self, spec: str | Mapping[str, Any], where: str) -> tuple[str, Mapping[str, Any]]:
        """The name and raw parameters of a spec in any form :meth:`resolve` accepts (not validated)."""
        if isinstance(spec, str):
            name, raw = spec, {}
        elif isinstance(spec, Mapping) and "name" in spec:
            raw = {k: v for k, v in spec.items() if k != "name"}
            name = spec["name"]
        elif isinstance(spec, Mapping) and len(spec) == 1:
            name, raw = next(iter(spec.items()))
            raw = raw or {}
        else:
            raise ConfigError(f"{where}: expected a {self.kind} name or a mapping with 'name', got {spec!r}")
        if not isinstance(name, str):
            raise ConfigError(f"{where}: {self.kind} name must be a string, got {name!r}")
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}.{name}: expected a mapping of parameters, got {raw!r}")
        return name, raw

    def describe_lines(self) -> list[str]:
        return [entry.describe() for entry in self]
