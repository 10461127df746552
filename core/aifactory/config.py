"""YAML configuration: safe loading and validation into typed pydantic models.

Every config and every registered parameter set is a :class:`StrictModel`: unknown keys are refused,
types are checked, defaults are documented on the model. Validation errors are turned into a single
line naming the file, the key path and what was expected, raised as :class:`ConfigError`.

Geographic text (a CRS, a WKT geometry) is checked by the field types :data:`CrsText` and :data:`WktText`
when the config is loaded, so that a typo fails early with the file and key path, not deep in a stage;
command-line options use :func:`parse_crs` for the same check with the option's name.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from aifactory.errors import ConfigError

if TYPE_CHECKING:
    import pyproj

ModelT = TypeVar("ModelT", bound=BaseModel)


def cache_dir() -> Path:
    """Where AI Factory keeps what it downloads or builds once: ``$AIFACTORY_CACHE``, else ``~/.cache/aifactory``."""
    return Path(os.environ.get("AIFACTORY_CACHE") or Path.home() / ".cache" / "aifactory")


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are an error, values are validated on assignment, and YAML's
    ``.nan`` and ``.inf`` are no numbers (a NaN buffer distance emptied every feature, an infinite one was a
    GEOS traceback)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False)


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that keeps an impossible date (``2024-13-45``) as text: the model then refuses it
    with the file and key path, where PyYAML would raise a bare ``ValueError`` from ``datetime.date``."""

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError:
            return self.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


def _not_utf8(path: Path, exc: UnicodeDecodeError) -> ConfigError:
    """Where the first byte that is not UTF-8 sits, so that the user can find it (e.g. a Latin-1 accent)."""
    line = exc.object[:exc.start].count(b"\n") + 1
    return ConfigError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}, "
                       f"line {line}); save the file as UTF-8")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with a safe loader; any problem is one :class:`ConfigError` line."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a config file")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # a SafeLoader
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc) from None
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


def _step(node: Any, part: int | str) -> tuple[bool, Any]:
    """Whether ``part`` is a key (or an index) of ``node``, and the value there (else ``node`` itself)."""
    if isinstance(node, Mapping) and part in node:
        return True, node[part]
    if isinstance(node, list | tuple) and isinstance(part, int) and 0 <= part < len(node):
        return True, node[part]
    return False, node


def _user_keys(loc: tuple[int | str, ...], data: Any, missing: bool) -> list[int | str]:
    """The parts of ``loc`` that are keys or indices of the user's input.

    Pydantic puts the member of a union it tried into the location (``select.Selection.clases``,
    ``select.lax-or-strict[...]``); those tags name no YAML key, so they are left out. A missing key is the
    one part that is not in the input and still the user's.
    """
    keys: list[int | str] = []
    node = data
    for number, part in enumerate(loc):
        found, node = _step(node, part)
        if found or (missing and number == len(loc) - 1):
            keys.append(part)
    return keys


def _shown(value: Any) -> str:
    """The offending input as the user wrote it: dates in ISO form, not ``datetime.date(2024, 5, 2)``."""
    if isinstance(value, list | tuple):
        return f"[{', '.join(_shown(item) for item in value)}]"
    return value.isoformat() if isinstance(value, dt.date) else repr(value)


def format_validation_error(exc: ValidationError, source: str, data: Any, prefix: str = "") -> str:
    """One line: ``source: key.path: message`` for the first error (and a count of the others); ``data`` is
    the input that was validated, to tell the user's keys in the error's location from pydantic's tags."""
    errors = exc.errors()
    # an unknown key is told first: with a required key missing beside it, it is most often that key misspelt
    first = next((error for error in errors if error["type"] == "extra_forbidden"), errors[0])
    keys = _user_keys(first["loc"], data, first["type"] == "missing")
    loc = ".".join(str(part) for part in (prefix, *keys) if part != "")
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        missing = [str(error["loc"][-1]) for error in errors
                   if error["type"] == "missing" and error["loc"][:-1] == first["loc"][:-1]]
        close = difflib.get_close_matches(str(first["loc"][-1]), missing, n=1)
        message = f"unknown key (did you mean {close[0]!r}?)" if close else "unknown key"
    elif first["type"] == "missing":
        message = "required key is missing"
    elif "input" in first and first["type"] not in ("extra_forbidden",):
        message = f"{message} (got {_shown(first['input'])})"
    more = f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    key = f"{loc}: " if loc else ""
    return f"{source}: {key}{message}{more}"


def validate(model: type[ModelT], data: Any, source: str, prefix: str = "") -> ModelT:
    """Validate ``data`` into ``model``; ``source`` names the file (or flag) for the error line."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, data, prefix)) from None


def _crs(value: str) -> pyproj.CRS:
    """The CRS a user wrote, or a ``ValueError`` with PROJ's reason in one line."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        return CRS.from_user_input(value)
    except CRSError as exc:
        reason = str(exc).splitlines()[0].rsplit("proj_create: ", 1)[-1].rstrip(")")
        raise ValueError(f"not a CRS: {reason} (expected e.g. EPSG:4326, a PROJ string or WKT)") from None


def parse_crs(value: str, where: str) -> pyproj.CRS:
    """The CRS given by an option or key (``where`` names it); an unknown one is one :class:`ConfigError` line."""
    try:
        return _crs(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc} (got {value!r})") from None


def _checked_crs(value: str) -> str:
    """Validator of :data:`CrsText`: the text is kept (it is what the resolved config shows), only checked."""
    _crs(value)
    return value


def _checked_wkt(value: str) -> str:
    """Validator of :data:`WktText`: the text is kept, only checked (GEOS's reason names the defect)."""
    import shapely

    try:
        shapely.from_wkt(value)
    except shapely.errors.GEOSException as exc:
        raise ValueError(f"invalid WKT: {exc}") from None
    return value


#: A config field holding a CRS ('EPSG:4326', a PROJ string or WKT), checked when the config is loaded.
CrsText = Annotated[str, AfterValidator(_checked_crs)]
#: A config field holding a WKT geometry, checked when the config is loaded.
WktText = Annotated[str, AfterValidator(_checked_wkt)]


@contextlib.contextmanager
def told_in(path: str | Path) -> Iterator[None]:
    """Config errors raised inside (a stage checking a key against the data: ``chips.size`` larger than every
    raster) name the file the key is in, as the loader's own errors do."""
    try:
        yield
    except ConfigError as exc:
        if not str(exc).startswith(str(path)):
            exc.args = (f"{path}: {exc}",)
        raise


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
