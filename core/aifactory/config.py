"""YAML configuration: safe loading and validation into typed pydantic models.

Every config and every registered parameter set is a :class:`StrictModel`: unknown keys are refused,
types are checked, defaults are documented on the model. Validation errors are turned into a single
line naming the file, the key path and what was expected, raised as :class:`ConfigError`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from aifactory.errors import ConfigError

ModelT = TypeVar("ModelT", bound=BaseModel)


def cache_dir() -> Path:
    """Where AI Factory keeps what it downloads or builds once: ``$AIFACTORY_CACHE``, else ``~/.cache/aifactory``."""
    return Path(os.environ.get("AIFACTORY_CACHE") or Path.home() / ".cache" / "aifactory")


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are an error, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load``; any problem is one :class:`ConfigError` line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return dict(data)


def format_validation_error(exc: ValidationError, source: str, prefix: str = "") -> str:
    """One line: ``source: key.path: message`` for the first error (and a count of the others)."""
    errors = exc.errors()
    first = errors[0]
    loc = ".".join(str(part) for part in (prefix, *first["loc"]) if part != "")
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "required key is missing"
    elif "input" in first and first["type"] not in ("extra_forbidden",):
        message = f"{message} (got {first['input']!r})"
    more = f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    key = f"{loc}: " if loc else ""
    return f"{source}: {key}{message}{more}"


def validate(model: type[ModelT], data: Any, source: str, prefix: str = "") -> ModelT:
    """Validate ``data`` into ``model``; ``source`` names the file (or flag) for the error line."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, prefix)) from None


def load_config(path: str | Path, model: type[ModelT]) -> ModelT:
    """Load a YAML file and validate it into ``model``."""
    return validate(model, load_yaml(path), str(path))


def read_versioned_json(path: str | Path, model: type[ModelT], max_version: int, missing: str) -> ModelT:
    """A JSON file with a ``version`` field validated into ``model``; one-line errors for a missing file
    (``missing`` says what the folder is not), invalid JSON, or a version newer than this code reads."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path.parent}: {missing} (no {path.name})")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    version = data.get("version", max_version)
    if not isinstance(version, int) or version > max_version:
        raise ConfigError(f"{path}: format version {version} is newer than this aifactory reads ({max_version}); "
                          "upgrade aifactory")
    return validate(model, data, str(path))


def dump_yaml(data: BaseModel | Mapping[str, Any]) -> str:
    """Serialize a model (or mapping) to YAML, e.g. to store the resolved config of a run."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    return yaml.safe_dump(dict(data), sort_keys=False)
