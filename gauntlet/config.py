"""One typed configuration tree for the validator, the miners and the local network.

Sources, later ones win: a preset (``paper`` = the reference's constants, ``default`` = ours; the
files under ``gauntlet/presets/``), then a TOML file, then ``GAUNTLET_<SECTION>__<FIELD>``
environment variables, then ``--set section.field=value`` overrides. pydantic-settings merges the
sources (``load_config`` hands it one source object per layer); ``GauntletConfig`` itself stays a
plain frozen model, so a stored config (``to_json``) reads back equal. Values that every validator
must agree on (the consensus-critical ones) are pinned by ``tests/gauntlet/test_config.py``.

The sections and their fields live in ``gauntlet/config_sections.py``; this module assembles them
and resolves the sources. It imports neither torch nor prefect, so a deployment can validate a
config cheaply.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (BaseSettings, EnvSettingsSource, InitSettingsSource, PydanticBaseSettingsSource,
                               SettingsConfigDict, SettingsError, TomlConfigSettingsSource)

from gauntlet.config_sections import (  # noqa: F401 - the sections are part of this module's API
    _Section, ChainConfig, DataConfig, ModelConfig, CodecConfig, FilterConfig, ScoringConfig, ScreeningConfig,
    UniquenessConfig, RatingConfig, PenaltyConfig, WeightConfig, AggregationConfig, ScheduleConfig,
    StorageConfig, AuditConfig, RetentionConfig, ScaleoutConfig, ValidatorConfig, RulesConfig,
)

PRESETS = ("paper", "default", "templar-2026")
ENV_PREFIX = "GAUNTLET_"
PRESET_DIR = Path(__file__).with_name("presets")
LOCAL_CONFIG = PRESET_DIR / "local.toml"
"""The local network's settings (tiny model, short windows), shipped with the package."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and how to fix it."""


class GauntletConfig(_Section):
    preset: Literal["paper", "default", "templar-2026"] = "default"
    """The preset the other sources were layered on."""
    chain: ChainConfig = ChainConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    codec: CodecConfig = CodecConfig()
    filter: FilterConfig = FilterConfig()
    scoring: ScoringConfig = ScoringConfig()
    screening: ScreeningConfig = ScreeningConfig()
    uniqueness: UniquenessConfig = UniquenessConfig()
    rating: RatingConfig = RatingConfig()
    penalty: PenaltyConfig = PenaltyConfig()
    weights: WeightConfig = WeightConfig()
    aggregation: AggregationConfig = AggregationConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    storage: StorageConfig = StorageConfig()
    audit: AuditConfig = AuditConfig()
    validator: ValidatorConfig = ValidatorConfig()
    scaleout: ScaleoutConfig = ScaleoutConfig()
    rules: RulesConfig = RulesConfig()
    retention: RetentionConfig = RetentionConfig()

    @model_validator(mode="after")
    def _cross_checks(self) -> GauntletConfig:
        if self.aggregation.min_peers > self.aggregation.gather_size:
            raise ValueError(
                f"aggregation.min_peers ({self.aggregation.min_peers}) exceeds "
                f"aggregation.gather_size ({self.aggregation.gather_size}); lower min_peers"
            )
        if self.filter.sync_max_steps > self.filter.sync_cap_steps:
            raise ValueError(
                "filter.sync_max_steps must not exceed filter.sync_cap_steps "
                f"({self.filter.sync_max_steps} > {self.filter.sync_cap_steps})"
            )
        return self

    def to_json(self) -> str:
        """The resolved config, as stored in the audit tables."""
        return self.model_dump_json()


class _Layered(BaseSettings, GauntletConfig):
    """The same tree, filled by pydantic-settings from the sources `load_config` hands it."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True, env_prefix=ENV_PREFIX,
                                      env_nested_delimiter="__", case_sensitive=False)


class _Environ(EnvSettingsSource):
    """`GAUNTLET_RATING__TAU=0.3` from a given mapping (tests pass their own); unknown sections refused."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(_Layered)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {key.lower(): value for key, value in self._environ.items()}

    def __call__(self) -> dict[str, Any]:
        prefix = ENV_PREFIX.lower()
        for key in self.env_vars:
            section, nested, _ = key.removeprefix(prefix).partition("__")
            if key.startswith(prefix) and nested and section not in GauntletConfig.model_fields:
                raise ConfigError(f"environment variable {key.upper()} names no setting (no section "
                                  f"{section!r}); remove it or fix the name")
        return super().__call__()


class _Preset(PydanticBaseSettingsSource):
    """The lowest layer: the values of the preset the higher layers chose (else `default`)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return preset_values(self.current_state.get("preset") or "default")


def preset_values(name: str) -> dict[str, Any]:
    """A preset's own values (gauntlet/presets/<name>.toml), `preset` included."""
    if name not in PRESETS:
        raise ConfigError(f"preset {name!r} is unknown; choose one of {', '.join(PRESETS)}")
    return {**tomllib.loads((PRESET_DIR / f"{name}.toml").read_text()), "preset": name}


def _parse_scalar(text: str) -> Any:
    """Parse an override value the way TOML would (numbers, booleans, arrays); else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """`["rating.beta=20", "weights.power=1"]` -> {"rating": {"beta": 20, ...}, "weights": {...}}."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        parts = [p for p in name.strip().split(".") if p]
        if not sep or not parts:
            raise ConfigError(f"override {item!r} is not of the form section.field=value")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} sets a field inside {part!r}, which is a value")
        node[parts[-1]] = _parse_scalar(value.strip())
    return out


def config_sources(path: str | Path | None = None, *, preset: str | None = None,
                   overrides: Iterable[str] | Mapping[str, Any] = (),
                   environ: Mapping[str, str] | None = None) -> list[tuple[str, PydanticBaseSettingsSource]]:
    """The layers, highest first, each with a name that says where a value came from."""
    values = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)
    if preset is not None:
        values["preset"] = preset
    layers: list[tuple[str, PydanticBaseSettingsSource]] = [("--set", InitSettingsSource(_Layered, values))]
    layers.append(("environment", _Environ(os.environ if environ is None else environ)))
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            layers.append((f"file {path}", TomlConfigSettingsSource(_Layered, toml_file=path)))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    return layers + [("preset", _Preset(_Layered))]


def load_config(path: str | Path | None = None, *, preset: str | None = None,
                overrides: Iterable[str] | Mapping[str, Any] = (),
                environ: Mapping[str, str] | None = None) -> GauntletConfig:
    """Resolve preset -> TOML file -> environment -> overrides, then validate.

    The preset is taken from the argument, else from the overrides, the environment or the
    file's top-level `preset`, else `default`. Raises ConfigError naming the field and the fix.
    """
    return resolve(config_sources(path, preset=preset, overrides=overrides, environ=environ))


def resolve(layers: Iterable[tuple[str, PydanticBaseSettingsSource]]) -> GauntletConfig:
    """Merge named layers (highest first, as `config_sources` gives them) and validate."""
    return _build([source for _, source in layers])


def _build(sources: list[PydanticBaseSettingsSource]) -> GauntletConfig:
    try:
        layered = _Layered(_build_sources=(tuple(sources), {}))
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from exc
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration: {exc}; give environment values as TOML/JSON would") from exc
    return GauntletConfig.model_validate({name: getattr(layered, name) for name in GauntletConfig.model_fields})


def _explain(exc: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        got = err.get("input")
        hint = "remove it (unknown setting)" if err["type"] == "extra_forbidden" else err["msg"]
        shown = json.dumps(got, default=str) if not isinstance(got, Mapping) else "{...}"
        lines.append(f"  {field} = {shown}: {hint}")
    return "\n".join(lines)


def with_overrides(config: GauntletConfig, overrides: Iterable[str] | Mapping[str, Any]) -> GauntletConfig:
    """A copy of a resolved config with some settings changed (replays' what-if)."""
    values = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)
    base = config.model_dump()
    return _build([InitSettingsSource(_Layered, values), InitSettingsSource(_Layered, base)])


SETTING_SECTIONS = frozenset({"chain", "data", "model", "codec", "storage", "audit", "validator", "scaleout",
                              "retention"})
"""Sections that describe where and on what a validator runs, not how it judges: a change of
preset for a what-if leaves them as they were (the recorded files, model and paths stay valid)."""


def with_preset(config: GauntletConfig, name: str) -> GauntletConfig:
    """`config` judged under another preset's rules: the target preset's own values replace the
    current preset's, every other setting (a network's own thresholds, its paths) is kept.

    What the current preset set and the target does not mention returns to the field default, so
    the result equals `load_config(preset=name)` plus the settings the operator chose."""
    current, target = preset_values(config.preset), preset_values(name)
    updates: dict[str, Any] = {"preset": name}
    for section, values in current.items():
        if isinstance(values, dict) and section not in SETTING_SECTIONS:
            fields = type(getattr(config, section)).model_fields
            updates.setdefault(section, {}).update({k: fields[k].default for k in values})
    for section, values in target.items():
        if isinstance(values, dict) and section not in SETTING_SECTIONS:
            updates.setdefault(section, {}).update(values)
    return with_overrides(config, updates)
