from __future__ import annotations

import pytest
from aifactory.config import StrictModel, load_config, load_yaml
from aifactory.errors import ConfigError
from aifactory.registry import Registry
from pydantic import Field


class Inner(StrictModel):
    size: int = Field(256, gt=0, description="tile size in pixels")


class Outer(StrictModel):
    name: str
    tiles: Inner = Inner()
    ratio: float = 0.5


def test_valid_config_loads(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("name: run\ntiles: {size: 128}\n")
    config = load_config(path, Outer)
    assert config.tiles.size == 128 and config.ratio == 0.5


@pytest.mark.parametrize("text, expected", [
    ("name: a\ntiles: {sizee: 3}\n", "tiles.sizee: unknown key"),
    ("name: a\ntiles: {size: big}\n", "tiles.size: Input should be a valid integer"),
    ("name: a\ntiles: {size: -3}\n", "tiles.size: Input should be greater than 0"),
    ("tiles: {size: 3}\n", "name: required key is missing"),
    ("name: [unclosed\n", "invalid YAML"),
    ("- a\n- b\n", "expected a mapping"),
])
def test_config_errors_name_file_and_key(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, Outer)
    message = str(excinfo.value)
    assert message.startswith(str(path)) and expected in message and "\n" not in message


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "nope.yaml")


def test_registry_resolves_specs_and_suggests_names():
    registry: Registry = Registry("widget", "aifactory.tests.none")

    class Params(StrictModel):
        factor: float = 2.0

    @registry.register("double", Params)
    def double(x, params):
        """Multiply by a factor."""
        return x * params.factor

    entry, params = registry.resolve({"name": "double", "factor": 3}, "ops.yaml: ops.0")
    assert entry.func(2, params) == 6
    entry, params = registry.resolve({"double": {"factor": 4}}, "x")
    assert params.factor == 4
    assert registry.resolve("double", "x")[1].factor == 2.0
    with pytest.raises(ConfigError, match="did you mean double"):
        registry.get("doubel")
    with pytest.raises(ConfigError, match="factr: unknown key"):
        registry.resolve({"name": "double", "factr": 1}, "ops.yaml")
    assert registry.describe_lines() == ["double  factor=2.0 (float)  — Multiply by a factor."]
