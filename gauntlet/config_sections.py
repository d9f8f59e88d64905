"""The sections of the configuration tree, one pydantic model each, with a docstring per field.

`gauntlet/config.py` assembles them into `GauntletConfig` and resolves it from the presets, a TOML
file, the environment and `--set`; this module is only the fields, their bounds and their checks
(it imports neither torch nor prefect).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, use_attribute_docstrings=True)


class ChainConfig(_Section):
    network: str = "local"
    """`local` (the file ledger), or a bittensor network: `finney`, `test`, or a `ws://` URL."""
    netuid: int | None = Field(None, ge=0)
    """The subnet. No default on a bittensor network (a wrong one sets weights on someone else's
    subnet): `open_chain` refuses to connect until the operator sets it. Unset on the local ledger means 3."""
    blocks_per_window: int = Field(8, ge=1)
    """Paper: 8 blocks of 12 s, about 96 s a window."""
    block_time_s: float = Field(12.0, gt=0)
    """Seconds per block (the local ledger's clock; bittensor: 12)."""
    validator_offset: int = Field(2, ge=1)
    """Window W is validated once the chain is at window W + validator_offset."""
    start_window: int = Field(0, ge=0)
    """`global_step = window - start_window`."""
    ledger: str = "data/localnet/chain.sqlite"
    """Path of the local ledger when `network = "local"`."""
    wallet_name: str = "default"
    """Bittensor wallet (coldkey) name under `wallet_path`."""
    wallet_hotkey: str = "default"
    """Hotkey name of that wallet; its ss58 address is the validator's identity on chain."""
    wallet_path: str = "~/.bittensor/wallets"
    """Folder of the bittensor wallets."""
    version_key: int = Field(0, ge=0)
    """Sent with every weights extrinsic; a subnet may refuse other versions."""


class DataConfig(_Section):
    corpus: str = "data/corpus"
    """A folder of Parquet shards with a `text` column (FineWeb-edu's layout)."""
    tokenizer: str = "data/tokenizer"
    """A local Hugging Face tokenizer folder (`save_pretrained` layout)."""
    pages_per_window: int = Field(6, ge=1)
    """Pages a peer trains on per window (`assign_pages(seed=uid, ...)`)."""
    rows_per_page: int = Field(100, ge=1)
    """Corpus rows per page."""
    seq_len: int = Field(2048, ge=8)
    """Tokens per training sequence."""
    batch_size: int = Field(6, ge=1)
    """Sequences per batch, for training and for scoring."""


class ModelConfig(_Section):
    size: Literal["tiny", "small", "paper-1.2b"] = "paper-1.2b"
    """Model shape: the paper's 1.2B LLaMA, or smaller ones for laptops and tests."""
    init_seed: int = 0
    """Every node builds the same initial weights from this seed."""


class CodecConfig(_Section):
    kind: Literal["dct", "sparseloco"] = "dct"
    """Pseudo-gradient file codec: `dct` (DeMo, the paper) or `sparseloco` (the reference's last)."""
    chunk: int = Field(64, ge=1, le=4096)
    """Largest chunk edge; the chunk of a dimension is its largest divisor <= chunk."""
    topk: int = Field(32, ge=1)
    """Entries kept per chunk by magnitude (DCT coefficients, or raw values for sparseloco)."""
    momentum: float = Field(0.999, ge=0, lt=1)
    """DCT miner momentum: `m = momentum * m + lr * g`."""
    error_feedback_after: int = Field(5, ge=0)
    """DCT miners skip error feedback in their first N windows (sparseloco never does)."""
    bins: int = Field(4, ge=2, le=256)
    """sparseloco: quantisation levels per value (4 = 2 bits), a consensus value of the file."""
    range_sigmas: float = Field(6.0, gt=0, allow_inf_nan=False)
    """sparseloco: the levels span this many standard deviations of a tensor's kept values."""
    ef_decay: float = Field(0.95, ge=0, le=1)
    """sparseloco miner: error feedback `e = ef_decay * e + lr * g` from the first window."""

    @model_validator(mode="after")
    def _sparseloco_chunk(self) -> CodecConfig:
        if self.kind == "sparseloco" and self.chunk > 64:
            raise ValueError(f"codec.chunk = {self.chunk}: sparseloco's 12-bit indices address chunks "
                             f"of at most 64 x 64 elements; use chunk <= 64")
        return self


class FilterConfig(_Section):
    put_window_s: float = Field(10.0, gt=0)
    """`t_max = t_min + put_window_s`."""
    max_file_mb: float = Field(512.0, gt=0)
    """A peer's file larger than this is refused before download."""
    fetch_timeout_s: float = Field(60.0, gt=0)
    """Time allowed to download one peer's file."""
    sync_cap_steps: float = Field(5.0, gt=0)
    """`sync = (1 - min(x, cap) / cap) ** exponent`, x = steps behind."""
    sync_exponent: float = Field(2.5, gt=0)
    """Exponent of the sync score (see sync_cap_steps)."""
    sync_max_steps: float = Field(3.0, ge=0)
    """A peer more than this many steps behind fails the sync check."""
    probe_elements: tuple[int, ...] = (10, 11)
    """Flat element indices per tensor that peers publish as their sync probe."""


class ScoringConfig(_Section):
    eval_lr_factor: float = Field(0.2, gt=0)
    """`theta_k = theta - eval_lr_factor * lr_W * sign(delta_k)` when scoring peer k."""
    sample_rate: float = Field(0.1, gt=0, le=1)
    """`max(1, floor(sample_rate * n_batches))` batches of each loader are scored."""
    policy: Literal["all", "sample"] = "all"
    """`all` (ours): every peer that passed stage 1; `sample` (paper): `peers_per_window`."""
    peers_per_window: int = Field(4, ge=1)
    """Peers scored per window under `policy = "sample"`."""
    bins: int = Field(5, ge=1)
    """Performance bins (by final score) the `sample` policy draws peers from."""
    random_pages: int = Field(6, ge=1)
    """Pages of random data per window (the paper used as many as a peer's own)."""
    seed_source: Literal["chain", "fixed"] = "chain"
    """`chain` (ours): block hash at the window's end + salt, stored; `fixed` (paper): 42."""
    shared_random_batches: bool = True
    """Ours: the same random batches for every peer of the window (L_rand_before once)."""
    salt: str = "gauntlet"
    """Mixed with the block hash into the window's random seed (`seed_source = "chain"`)."""
    device: str = "auto"
    """`auto` (CUDA when present, else CPU), `cpu`, `cuda`, `cuda:1`..."""
    chunk_peers: int = Field(8, ge=1)
    """Peers per scoring task when the flow fans out."""


class ScreeningConfig(_Section):
    """Ours, off by default and in `paper`: see `gauntlet.screening`."""

    enabled: bool = False
    """Estimate every peer's s_k to first order from one backward pass on the window's random
    batches, and score exactly only the peers `gauntlet.screening.choose_exact` picks."""
    margin: int = Field(4, ge=0)
    """Peers scored exactly beyond the top `aggregation.gather_size` by estimate."""
    band: float = Field(0.25, ge=0)
    """Near the gather cutoff: an estimate within band * median |estimate| of the cutoff's."""
    max_near: int = Field(4, ge=0)
    """At most this many near-cutoff peers (closest first) are added to the exact set."""
    audit_peers: int = Field(2, ge=0)
    """Peers drawn from the rest with the window's seed and scored exactly, so that an estimate
    cannot be gamed unseen."""


class UniquenessConfig(_Section):
    ema: float = Field(0.95, ge=0, lt=1)
    """`B = ema * B + (1 - ema) * b`."""
    own_margin: float = Field(0.0, ge=0)
    """b = +1 iff `r_own > s + own_margin * |s|`. Paper: 0; ours: 0.2 (see uniqueness.indicator).
    Under the sequential test: the margin the per-batch difference must clear."""
    own_test: Literal["margin", "sequential"] = "margin"
    """`margin` (paper, with own_margin 0): one comparison of two token-weighted means. `sequential`
    (ours): per-batch improvements with a confidence bound, more own batches while it is close
    (uniqueness.sequential_own_test)."""
    own_z: float = Field(2.0, gt=0)
    """Sequential test: b = +-1 once `difference -+ own_z * std_error` clears 0."""
    own_sd_floor: float = Field(0.3, ge=0)
    """Sequential test: each side's per-batch standard deviation is at least own_sd_floor * |s|
    (0.3: about the median spread measured in benchmarks/bench_own_test.py, 0.31 own, 0.27 random)."""
    own_max_batches: int = Field(8, ge=1)
    """Sequential test: at most this many own batches (sampled ones included) per evaluation."""
    own_undecided: Literal["zero", "sign", "negative"] = "negative"
    """Sequential test, still undecided at own_max_batches: b = 0 (`zero`), the difference's sign
    (`sign`), or -1 if the difference is <= 0 and 0 if above (`negative`; uniqueness.sequential_own_test)."""
    overlap_halve: float = Field(0.4, ge=0, le=1)
    """Top-k index overlap at which the later uploader's score is halved."""
    overlap_reset: float = Field(0.5, ge=0, le=1)
    """Overlap at which the later uploader's score is reset to 0."""
    overlap_ban: float = Field(0.6, ge=0, le=1)
    """Overlap at which the later uploader is reset and barred for `ban_windows`."""
    ban_windows: int = Field(200, ge=0)
    """Windows a copier stays barred."""

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
    """OpenSkill Plackett-Luce: a new peer's mean skill."""
    sigma: float = Field(25.0 / 3.0, gt=0)
    """A new peer's skill uncertainty (ordinal = mu - 3 sigma)."""
    beta: float = Field(7.0, gt=0)
    """Performance noise of one match."""
    tau: float = Field(0.1, ge=0)
    """Uncertainty added before each match, so ratings keep moving."""
    anchor: float = Field(0.0, ge=0, le=1)
    """Ours (paper 0: off): a virtual player joins every match with the gradient score `anchor` x
    the median of the window's scored peers', and the final score uses each peer's ordinal minus
    the anchor's. The paper's ordinal is relative to the prior (mu - 3 sigma starts at 0), so
    among peers doing equal work about half sit below 0 and are paid nothing; against the anchor,
    a peer is paid while it beats a fraction of the typical peer, and an update that helps less
    than that (or harms) still ranks below it (match.anchored_match)."""


class PenaltyConfig(_Section):
    missing: float = Field(0.75, ge=0, le=1)
    """Missing, early, late or invalid file: F and B are multiplied by this (if positive)."""
    desynced: float = Field(0.75, ge=0, le=1)
    """Failed sync check: F and B are multiplied by this (if positive)."""
    reset_after: int = Field(25, ge=1)
    """Windows of inactivity after which a peer's rating is deleted."""


class WeightConfig(_Section):
    power: float = Field(2.0, gt=0)
    """`w_k = F_k ** power / sum_j F_j ** power` over peers with F > 0."""
    own_data: Literal["scale", "gate"] = "scale"
    """How B enters this window's score: `scale` (paper) ordinal x max(0, B) x sync; `gate` (ours)
    ordinal x sync while B > 0, else 0: B proves the update comes from the peer's own pages, the
    ordinal says how much it helped, so more work is paid more (ratings.window_score)."""
    score_ema: float = Field(0.0, ge=0, lt=1)
    """F = score_ema x F_before + (1 - score_ema) x this window's score, for peers in the match
    (paper 0: this window's score alone). One unlucky window then lowers pay instead of zeroing
    it; the gather list still takes only peers whose score this window is positive."""
    min_sum: float = Field(1e-8, ge=0)
    """All weights are zero when that sum is at most this."""
    set_interval: int = Field(50, ge=1)
    """Weights are set on chain every N windows."""


class AggregationConfig(_Section):
    gather_size: int = Field(15, ge=1)
    """G: the top peers by weight whose gradients are aggregated."""
    refresh_every: int = Field(5, ge=1)
    """The gather list is recomputed every N windows."""
    effective_after: int = Field(2, ge=0)
    """A list chosen after validating W is used from window W + validator_offset + effective_after."""
    min_peers: int = Field(5, ge=1)
    """A shorter list is topped up with the best-rated peers whose file passed stage 1."""
    merge: Literal["choosers", "all"] = "choosers"
    """How the gathered updates are merged at each index (a consensus value: miners must use the
    same): `choosers` (paper, reference) the mean over the peers that chose the index; `all`
    (ours) the sum over them divided by the number of peers, the mean of their decoded updates
    (gauntlet.aggregation.aggregate)."""
    startup: Literal["all", "multi_krum"] = "all"
    """Before the first gather list is in force (a new network's first windows, when no ratings
    exist yet): aggregate every file stage 1 accepted (`all`, paper and reference) or only the
    files Multi-Krum keeps (`multi_krum`, ours; gauntlet.aggregation.multi_krum on the unit-norm
    updates). A consensus value, like `merge`: miners must use the same."""
    startup_hostile: float = Field(0.4, ge=0, lt=0.5)
    """`startup = multi_krum`: the share of the accepted files assumed hostile; Multi-Krum
    tolerates f = floor(share x n) of n (at most (n - 3) // 2) and keeps n - f."""


class ScheduleConfig(_Section):
    peak_lr: float = Field(4e-4, gt=0)
    """Learning rate at the end of the warm-up."""
    warmup_windows: int = Field(250, ge=0)
    """Windows of linear warm-up."""
    warmup_start_factor: float = Field(0.1, gt=0, le=1)
    """The warm-up starts at `warmup_start_factor * peak_lr`."""
    t0: int = Field(20000, ge=1)
    """Length in windows of the first cosine cycle after the warm-up."""
    t_mult: int = Field(2, ge=1)
    """Each cosine cycle is this many times longer than the previous one."""
    min_lr: float = Field(4e-5, ge=0)
    """Learning rate at the bottom of each cosine cycle."""


class StorageConfig(_Section):
    max_concurrency: int = Field(16, ge=1)
    """Peers' files downloaded in parallel."""
    endpoint_policy: str = Field("auto", pattern="^(auto|public|allow_private)$")
    """Peers' endpoints: `public` = https to public addresses only; `auto` = allow_private on a local chain."""
    trusted_time_hosts: tuple[str, ...] = ("*.r2.cloudflarestorage.com", "*.eu.r2.cloudflarestorage.com",
                                           "s3.amazonaws.com", "s3.*.amazonaws.com", "s3.dualstack.*.amazonaws.com")
    """Stores whose LastModified a peer cannot set (`*` = one DNS label; not `*.amazonaws.com`: EC2 names)."""
    local_trusted_time_hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
    """Also trusted for time, but only under the allow_private policy (the local network's moto)."""
    fetch_retries: int = Field(2, ge=0, le=5)
    """Retries of a 429/5xx/SlowDown or dropped answer, with back-off, inside filter.fetch_timeout_s."""
    reads_per_second: float = Field(0.0, ge=0)
    """Peers' files read per second by every flow run sharing one Prefect server (the global rate
    limit `gauntlet-bucket-reads`, created by `deployments.limits`), so providers see one steady
    client however many windows run; 0 = unlimited. Direct runs (replays, benchmarks) ignore it."""


class AuditConfig(_Section):
    root: str = "data/localnet/audit"
    """Folder of the audit tables (`<table>/window_id=<W>/part-0.parquet`)."""


class RetentionConfig(_Section):
    keep_checkpoints: int = Field(0, ge=0)
    """Newest checkpoints kept in `validator.workdir/checkpoints` (0 = all); the audit tables keep their hashes."""
    keep_archive_windows: int = Field(0, ge=0)
    """Newest windows of fetched peer files kept in `validator.workdir/archive` (0 = all); older windows cannot be replayed."""


class ScaleoutConfig(_Section):
    dask_address: str = ""
    """Empty: score on this machine; `tcp://host:8786`: an existing Dask scheduler (prefect-dask)."""
    gpu_resource: bool = False
    """Route scoring tasks to Dask workers started with `--resources GPU=1`."""


class ValidatorConfig(_Section):
    workdir: str = "data/localnet/validator"
    """Checkpoints (`checkpoints/<W>.safetensors`) and the archive of fetched files (`archive/<W>/`)."""
    hotkey: str = "validator"
    """The validator's hotkey (ss58 address on a bittensor chain; a name on the local ledger)."""
    publish_checkpoint_every: int = Field(1, ge=0)
    """Publish theta_{W+1} (and the state after W) for joining validators and miners every N windows; 0 = never."""
    max_lag_windows: int = Field(3, ge=0)
    """`gauntlet status` exits non-zero (a failing health check) when more windows than this are ready but not validated."""


class RulesConfig(_Section):
    """The reference's later rules (templar v2.1.28, 2026-01): all off by default, all on in `templar-2026`.

    Read from `neurons/validator.py` and `hparams/hparams.json` of one-covenant/templar; each rule's
    function in `gauntlet/rules2026.py` names the reference function it follows.
    """

    missing_in_match: bool = False
    """Missing or invalid files enter the OpenSkill match ranked with `missing_score`."""
    missing_score: float = -99.0
    """The match score of a missing or invalid file (hparams `missing_gradient_penalty_score`)."""
    escalating_missing: bool = False
    """Missing cut grows with consecutive misses (`missing_cuts`) instead of `penalty.missing`."""
    missing_cuts: tuple[Annotated[float, Field(ge=0, le=1)], ...] = Field((0.75, 0.5, 0.0), min_length=1)
    """Cut of the 1st, 2nd, ... consecutive miss; the last value applies to every later miss."""
    gather_success_floor: float = Field(0.4, ge=0, le=1)
    """A window whose gather success rate is under this cuts every missing peer x0."""
    naughty: bool = False
    """Missing in `naughty_ratio` of the last `miss_history` windows bars the peer `naughty_windows`."""
    miss_history: int = Field(8, ge=1)
    """Windows of missing-file history kept per peer."""
    naughty_ratio: float = Field(0.5, ge=0, le=1)
    """Share of missing windows (>=) in a full history that puts a peer on the naughty list."""
    naughty_windows: int = Field(20, ge=0)
    """Windows a naughty peer is barred for (hparams-free constant `naughty_peer_timeout`)."""
    reset_barred: bool = False
    """A barred peer (naughty or copy ban) has its rating and trackers reset every window."""
    negative_cut: bool = False
    """More than `negative_ratio` negative in the last `negative_history` evaluations: F, B x`negative_factor`."""
    negative_history: int = Field(8, ge=1)
    """Evaluations of history the negative cut looks at (it needs a full history)."""
    negative_ratio: float = Field(0.5, ge=0, le=1)
    """Share of negative evaluations (strictly more) that triggers the cut."""
    negative_factor: float = Field(0.25, ge=0, le=1)
    """The negative cut's multiplier."""
    skip_rank: int = Field(5, ge=1)
    """No negative cut in a window whose `skip_rank`-th ranked match score is itself negative."""
    exclude_negative: bool = False
    """`negative_streak` negative evaluations in a row exclude a peer from gather until a positive."""
    negative_streak: int = Field(3, ge=1)
    """Consecutive negative evaluations that exclude a peer (hparams `consecutive_negative_threshold`)."""
    uniqueness_floor: bool = False
    """After `floor_after` windows of the network, B under `floor` makes the final score 0."""
    floor: float = Field(0.10, ge=0)
    """hparams `bma_threshold`."""
    floor_after: int = Field(10, ge=0)
    """hparams `bma_warmup_windows`, counted from chain.start_window."""
    zero_below: float = Field(0.0, ge=0)
    """A final score cut under this becomes 0 (reference `score_zero_threshold` 1e-4); 0 = off."""
    sync_iqm: bool = False
    """Steps behind as the interquartile mean of |delta theta| / EMA(param change) (rules2026.steps_behind_iqm)."""
    sync_ema_alpha: float = Field(0.2, gt=0, le=1)
    """EMA weight of the newest change of each probed parameter (reference `param_change_alpha`)."""
    weight_scheme: Literal["power", "ramp"] = "power"
    """`power`: F ** p normalised (paper); `ramp`: top gather peers on a linear ramp plus a decaying tail."""
    gather_share: float = Field(0.75, ge=0, le=1)
    """Share of the unburned weight paid to the top `aggregation.gather_size` peers."""
    top_ratio: float = Field(2.0, ge=1)
    """Ratio of the first to the last gather peer's weight on the linear ramp."""
    reserve_count: int = Field(10, ge=0)
    """Peers after the gather peers paid from the rest of the unburned weight."""
    reserve_decay: float = Field(0.5, gt=0, le=1)
    """Geometric decay of the reserve peers' weights."""
    burn_share: float = Field(0.0, ge=0, le=1)
    """Share of the weight set on `burn_uid` (a subnet-owner policy; the reference burned 0.5 to uid 1)."""
    burn_uid: int = Field(0, ge=0)
    """The uid that receives `burn_share`."""
