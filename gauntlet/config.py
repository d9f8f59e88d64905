"""One typed configuration tree for the validator, the miners and the local network.

Sources, later ones win: a preset (``paper`` = the reference's constants, ``default`` = ours),
then a TOML file, then ``GAUNTLET_<SECTION>__<FIELD>`` environment variables, then ``--set
section.field=value`` overrides. Values that every validator must agree on (the consensus-critical
ones) are pinned by ``tests/gauntlet/test_config.py``.

This module imports neither torch nor prefect, so a deployment can validate a config cheaply.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PRESETS = ("paper", "default")
ENV_PREFIX = "GAUNTLET_"


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and how to fix it."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ChainConfig(_Section):
    network: str = "local"
    """`local` (the file ledger), or a bittensor network: `finney`, `test`, or a `ws://` URL."""
    netuid: int | None = Field(None, ge=0)
    """The subnet. No default on a bittensor network (a wrong one sets weights on someone else's
    subnet): `open_chain` refuses to connect until the operator sets it. Unset on the local ledger means 3."""
    blocks_per_window: int = Field(8, ge=1)
    """Paper: 8 blocks of 12 s, about 96 s a window."""
    block_time_s: float = Field(12.0, gt=0)
    validator_offset: int = Field(2, ge=1)
    """Window W is validated once the chain is at window W + validator_offset."""
    start_window: int = Field(0, ge=0)
    """`global_step = window - start_window`."""
    ledger: str = "data/localnet/chain.sqlite"
    """Path of the local ledger when `network = "local"`."""
    wallet_name: str = "default"
    wallet_hotkey: str = "default"
    wallet_path: str = "~/.bittensor/wallets"
    version_key: int = Field(0, ge=0)


class DataConfig(_Section):
    corpus: str = "data/corpus"
    """A folder of Parquet shards with a `text` column (FineWeb-edu's layout)."""
    tokenizer: str = "data/tokenizer"
    """A local Hugging Face tokenizer folder (`save_pretrained` layout)."""
    pages_per_window: int = Field(6, ge=1)
    rows_per_page: int = Field(100, ge=1)
    seq_len: int = Field(2048, ge=8)
    batch_size: int = Field(6, ge=1)


class ModelConfig(_Section):
    size: Literal["tiny", "small", "paper-1.2b"] = "paper-1.2b"
    init_seed: int = 0
    """Every node builds the same initial weights from this seed."""


class CodecConfig(_Section):
    chunk: int = Field(64, ge=1, le=4096)
    """Largest chunk edge; the chunk of a dimension is its largest divisor <= chunk."""
    topk: int = Field(32, ge=1)
    momentum: float = Field(0.999, ge=0, lt=1)
    error_feedback_after: int = Field(5, ge=0)
    """Error feedback is skipped in the first N windows a miner trains."""


class FilterConfig(_Section):
    put_window_s: float = Field(10.0, gt=0)
    """`t_max = t_min + put_window_s`."""
    max_file_mb: float = Field(512.0, gt=0)
    fetch_timeout_s: float = Field(60.0, gt=0)
    sync_cap_steps: float = Field(5.0, gt=0)
    sync_exponent: float = Field(2.5, gt=0)
    sync_max_steps: float = Field(3.0, ge=0)
    """A peer more than this many steps behind fails the sync check."""
    probe_elements: tuple[int, ...] = (10, 11)


class ScoringConfig(_Section):
    eval_lr_factor: float = Field(0.2, gt=0)
    sample_rate: float = Field(0.1, gt=0, le=1)
    """`max(1, floor(sample_rate * n_batches))` batches of each loader are scored."""
    policy: Literal["all", "sample"] = "all"
    """`all` (ours): every peer that passed stage 1; `sample` (paper): `peers_per_window`."""
    peers_per_window: int = Field(4, ge=1)
    bins: int = Field(5, ge=1)
    random_pages: int = Field(6, ge=1)
    """Pages of random data per window (the paper used as many as a peer's own)."""
    seed_source: Literal["chain", "fixed"] = "chain"
    """`chain` (ours): block hash at the window's end + salt, stored; `fixed` (paper): 42."""
    shared_random_batches: bool = True
    """Ours: the same random batches for every peer of the window (L_rand_before once)."""
    salt: str = "gauntlet"
    device: str = "auto"
    """`auto` (CUDA when present, else CPU), `cpu`, `cuda`, `cuda:1`..."""
    chunk_peers: int = Field(8, ge=1)
    """Peers per scoring task when the flow fans out."""


class UniquenessConfig(_Section):
    ema: float = Field(0.95, ge=0, lt=1)
    """`B = ema * B + (1 - ema) * b`."""
    own_margin: float = Field(0.0, ge=0)
    """b = +1 iff `r_own > s + own_margin * |s|`. Paper: 0; ours: 0.2 (see uniqueness.indicator)."""
    overlap_halve: float = Field(0.4, ge=0, le=1)
    overlap_reset: float = Field(0.5, ge=0, le=1)
    overlap_ban: float = Field(0.6, ge=0, le=1)
    ban_windows: int = Field(200, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> UniquenessConfig:
        if not self.overlap_halve <= self.overlap_reset <= self.overlap_ban:
            raise ValueError(
                "overlap thresholds must satisfy overlap_halve <= overlap_reset <= overlap_ban; "
                f"got {self.overlap_halve}, {self.overlap_reset}, {self.overlap_ban}"
            )
        return self


class RatingConfig(_Section):
    mu: float = 25.0
    sigma: float = Field(25.0 / 3.0, gt=0)
    beta: float = Field(7.0, gt=0)
    tau: float = Field(0.1, ge=0)


class PenaltyConfig(_Section):
    missing: float = Field(0.75, ge=0, le=1)
    """Missing, early, late or invalid file: F and B are multiplied by this."""
    desynced: float = Field(0.75, ge=0, le=1)
    inactive: float = Field(0.75, ge=0, le=1)
    reset_after: int = Field(25, ge=1)
    """Windows of inactivity after which a peer's rating is deleted."""


class WeightConfig(_Section):
    power: float = Field(2.0, gt=0)
    min_sum: float = Field(1e-8, ge=0)
    set_interval: int = Field(50, ge=1)
    """Weights are set on chain every N windows."""


class AggregationConfig(_Section):
    gather_size: int = Field(15, ge=1)
    refresh_every: int = Field(5, ge=1)
    effective_after: int = Field(2, ge=0)
    min_peers: int = Field(5, ge=1)


class ScheduleConfig(_Section):
    peak_lr: float = Field(4e-4, gt=0)
    warmup_windows: int = Field(250, ge=0)
    warmup_start_factor: float = Field(0.1, gt=0, le=1)
    t0: int = Field(20000, ge=1)
    t_mult: int = Field(2, ge=1)
    min_lr: float = Field(4e-5, ge=0)


class StorageConfig(_Section):
    root: str = "data/localnet/buckets"
    """Folder that holds one sub-folder per local bucket (embedded default)."""
    max_concurrency: int = Field(16, ge=1)


class AuditConfig(_Section):
    root: str = "data/localnet/audit"
    archive_submissions: bool = True
    """Keep a copy of every fetched file so a window can be replayed after buckets expire."""


class RetentionConfig(_Section):
    keep_checkpoints: int = Field(0, ge=0)
    """Newest checkpoints kept in `validator.workdir/checkpoints` (0 = all); the audit tables keep their hashes."""
    keep_archive_windows: int = Field(0, ge=0)
    """Newest windows of fetched peer files kept in `validator.workdir/archive` (0 = all); older windows cannot be replayed."""


class ScaleoutConfig(_Section):
    dask_address: str = ""
    """Empty: score on this machine (Prefect's thread pool). `tcp://host:8786`: an existing Dask
    scheduler whose workers score chunks of peers (prefect-dask)."""
    gpu_resource: bool = False
    """Route scoring tasks to Dask workers started with `--resources GPU=1`."""


class ValidatorConfig(_Section):
    workdir: str = "data/localnet/validator"
    """Checkpoints (`checkpoints/<W>.safetensors` = theta at the start of W) and the archive of
    fetched files (`archive/<W>/<uid>.safetensors`)."""
    hotkey: str = "validator"
    """The validator's hotkey (ss58 address on a bittensor chain; a name on the local ledger)."""
    max_lag_windows: int = Field(3, ge=0)
    """`gauntlet status` exits non-zero (a failing health check) when more windows than this are ready but not validated."""


class GauntletConfig(_Section):
    preset: Literal["paper", "default"] = "default"
    chain: ChainConfig = ChainConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    codec: CodecConfig = CodecConfig()
    filter: FilterConfig = FilterConfig()
    scoring: ScoringConfig = ScoringConfig()
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
        if self.data.rows_per_page * self.data.pages_per_window < 1:
            raise ValueError("data: a window needs at least one row")
        return self

    def to_json(self) -> str:
        """The resolved config, as stored in the audit tables."""
        return self.model_dump_json()

    def fingerprint_fields(self) -> dict[str, Any]:
        """What a submission must agree on with the validator (model and codec)."""
        return {"model": self.model.model_dump(), "codec": {"chunk": self.codec.chunk, "topk": self.codec.topk}}


# Values that differ between presets. `paper` is the reference (templar v0.2.85); `default` holds
# the improvements marked **ours** in GAUNTLET.md.
_PRESET_VALUES: dict[str, dict[str, Any]] = {
    "paper": {
        "scoring": {"policy": "sample", "seed_source": "fixed", "shared_random_batches": False},
        "uniqueness": {"own_margin": 0.0},
    },
    "default": {
        "scoring": {"policy": "all", "seed_source": "chain", "shared_random_batches": True},
        "uniqueness": {"own_margin": 0.2},
    },
}


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _parse_scalar(text: str) -> Any:
    """Parse an override value the way TOML would (numbers, booleans, arrays); else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    parts = [p for p in dotted.split(".") if p]
    if not parts:
        raise ConfigError(f"empty setting name in override {dotted!r}")
    tree: dict[str, Any] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        tree = {part: tree}
    return tree


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`GAUNTLET_SCORING__EVAL_LR_FACTOR=0.3` -> {"scoring": {"eval_lr_factor": 0.3}}."""
    environ = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or "__" not in key:
            continue
        dotted = key[len(ENV_PREFIX):].lower().replace("__", ".")
        out = _deep_merge(out, _nest(dotted, _parse_scalar(value)))
    return out


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """`["rating.beta=20", "weights.power=1"]` -> nested dict."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not of the form section.field=value")
        out = _deep_merge(out, _nest(name.strip(), _parse_scalar(value.strip())))
    return out


def load_config(
    path: str | Path | None = None,
    *,
    preset: str | None = None,
    overrides: Iterable[str] | Mapping[str, Any] = (),
    environ: Mapping[str, str] | None = None,
) -> GauntletConfig:
    """Resolve preset -> TOML file -> environment -> overrides, then validate.

    The preset is taken from the argument, else from the file's top-level `preset`, else
    `default`. Raises ConfigError naming the field and the fix.
    """
    file_values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            file_values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    env_values = env_overrides(environ)
    set_values = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)
    chosen = preset or set_values.get("preset") or env_values.get("preset") or file_values.get("preset") or "default"
    if chosen not in PRESETS:
        raise ConfigError(f"preset {chosen!r} is unknown; choose one of {', '.join(PRESETS)}")
    merged: dict[str, Any] = {"preset": chosen}
    for layer in (_PRESET_VALUES[chosen], file_values, env_values, set_values):
        merged = _deep_merge(merged, layer)
    merged["preset"] = chosen
    try:
        return GauntletConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from exc


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
    try:
        return GauntletConfig.model_validate(_deep_merge(config.model_dump(), values))
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from exc
