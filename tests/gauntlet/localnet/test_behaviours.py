"""Each behaviour uploads what it claims, as the validator's own parser and copy check see it."""

from __future__ import annotations

import pytest
import torch

from gauntlet.codec import DCTCodec
from gauntlet.config import GauntletConfig, with_overrides
from gauntlet.data import Corpus, load_tokenizer
from gauntlet.filter import probe_values, steps_behind
from gauntlet.localnet.attacks import extended_pages
from gauntlet.localnet.behaviours import (
    BEHAVIOURS,
    MALFORMED_KINDS,
    Behaviour,
    DataIgnorer,
    Malformed,
    Phase,
    WindowEnv,
    make_behaviour,
)
from gauntlet.localnet.network import HONEST_WORK
from gauntlet.miner import MinerState, mine_window, own_pages, submission_bytes
from gauntlet.model import build_model
from gauntlet.submission import ModelSpec, Submission, parse_submission
from gauntlet.uniqueness import find_copies
from gauntlet.verdicts import Reason, Verdict
from gauntlet.window.context import model_spec

LR = 4e-4


@pytest.fixture(scope="module")
def world(tiny_config: GauntletConfig):
    cfg = with_overrides(tiny_config, {"data": {"rows_per_page": 4}})
    tok = load_tokenizer(cfg.data.tokenizer)
    model = build_model("tiny", len(tok), cfg.model.init_seed).eval()
    scratch = build_model("tiny", len(tok), cfg.model.init_seed).eval()
    return cfg, tok, Corpus(cfg.data.corpus), model, scratch, model_spec(cfg, model, len(tok))


def _env(world, window: int = 3, uploads: dict[int, bytes] | None = None) -> WindowEnv:
    cfg, tok, corpus, model, scratch, spec = world

    def load_scratch(params):
        with torch.no_grad():
            for n, p in scratch.named_parameters():
                p.copy_(params[n])
        return scratch

    store = uploads if uploads is not None else {}
    return WindowEnv(cfg, window, LR, model, DCTCodec.from_config(cfg.codec), corpus, tok, spec,
                     read_upload=store.get, scratch_model=load_scratch)


def _parse(data: bytes, window: int, uid: int, spec: ModelSpec) -> Submission | Verdict:
    return parse_submission(data, window=window, uid=uid, spec=spec, max_bytes=2**24)


def _honest_reference(world, uid: int, window: int = 3, pages: list[int] | None = None) -> Submission:
    """What the reference miner alone uploads for (uid, window), from a fresh state."""
    env = _env(world, window)
    mined = mine_window(env.model, MinerState(uid), window, LR, env.corpus, env.tokenizer, env.codec, env.cfg, pages)
    return _parse(submission_bytes(mined, env.spec.fingerprint, env.codec), window, uid, env.spec)


ROSTER = {1: "honest", 2: "honest", 3: "free_rider", 4: "copycat", 5: "copycat_noisy", 6: "sybil", 7: "sybil",
          8: "malformed"}


def test_registry_names_match_classes_and_unknown_names_are_refused() -> None:
    assert {"honest", "free_rider", "noise", "copycat", "sign_flip", "scaled", "data_ignorer", "stale", "late",
            "early", "malformed", "sybil"} <= set(BEHAVIOURS)
    for name, cls in BEHAVIOURS.items():
        assert cls.name == name and issubclass(cls, Behaviour)
    assert BEHAVIOURS["early"].phase is Phase.EARLY and BEHAVIOURS["late"].phase is Phase.LATE
    assert BEHAVIOURS["copycat"].phase is Phase.FOLLOW and BEHAVIOURS["honest"].phase is Phase.ON_TIME
    with pytest.raises(ValueError, match="unknown behaviour 'idle'"):
        make_behaviour("idle", 1, ROSTER)


@pytest.mark.parametrize("name", ["honest", "early", "late"])
def test_honest_timing_variants_upload_the_reference_miners_file(world, name: str) -> None:
    env = _env(world)
    sub = _parse(make_behaviour(name, 1, ROSTER).prepare(env), 3, 1, env.spec)
    ref = _honest_reference(world, 1)
    assert isinstance(sub, Submission) and sub.content_hash == ref.content_hash
    assert sub.probe == probe_values(env.theta, env.cfg.filter.probe_elements)


def test_hostile_updates_are_valid_files_of_the_claimed_kind(world) -> None:
    env = _env(world)
    ref = _honest_reference(world, 2)
    subs = {name: _parse(make_behaviour(name, 2, ROSTER).prepare(env), 3, 2, env.spec)
            for name in ("free_rider", "noise", "sign_flip", "scaled")}
    assert all(isinstance(s, Submission) for s in subs.values()), subs
    for name, (idx, vals) in ref.grads.items():
        assert torch.count_nonzero(subs["free_rider"].grads[name][1]) == 0
        assert torch.equal(subs["sign_flip"].grads[name][0], idx)
        assert torch.equal(subs["sign_flip"].grads[name][1], -vals)
        assert torch.equal(subs["scaled"].grads[name][1], vals * 100)
        noise_idx, noise_vals = subs["noise"].grads[name]
        assert torch.allclose(noise_vals.norm(), vals.norm(), rtol=1e-5)  # the honest norm per tensor
        assert not torch.equal(noise_idx, idx)
    overlap = find_copies({2: ref.grads, 3: subs["noise"].grads}, {2: 0.0, 3: 1.0}, {2: "a", 3: "b"})
    assert overlap == {}  # random indices do not look like a copy


def test_data_ignorer_trains_on_pages_that_are_not_its_own(world) -> None:
    env = _env(world)
    ignorer = DataIgnorer(2, ROSTER)
    pages = ignorer.pages(env)
    own = own_pages(2, 3, env.corpus, env.cfg)
    assert len(pages) == env.cfg.data.pages_per_window and not set(pages) & set(own)
    sub = _parse(ignorer.prepare(env), 3, 2, env.spec)
    assert sub.content_hash == _honest_reference(world, 2, pages=pages).content_hash
    assert sub.content_hash != _honest_reference(world, 2).content_hash


def test_stale_keeps_its_first_model_and_falls_behind(world) -> None:
    env = _env(world, window=3)
    stale = make_behaviour("stale", 1, ROSTER)
    first = _parse(stale.prepare(env), 3, 1, env.spec)
    start_probe = probe_values(env.theta, env.cfg.filter.probe_elements)
    assert first.probe == start_probe
    saved = {n: p.detach().clone() for n, p in env.model.named_parameters()}
    try:
        with torch.no_grad():  # the network applies two aggregates the stale peer ignores
            for p in env.model.parameters():
                p.sub_(2 * LR)
        later = _env(world, window=5)
        restored = make_behaviour("stale", 1, ROSTER)
        restored.load_state(*_round_trip(stale))  # a new process carries on
        assert restored.state.windows_trained == 1
        second = _parse(restored.prepare(later), 5, 1, later.spec)
        assert second.probe == start_probe
        now = probe_values(later.theta, later.cfg.filter.probe_elements)
        assert steps_behind(now, second.probe, LR) == pytest.approx(2.0, rel=1e-3)
    finally:
        with torch.no_grad():
            for n, p in env.model.named_parameters():
                p.copy_(saved[n])


def _round_trip(behaviour: Behaviour):
    from safetensors.torch import load, save

    tensors, meta = behaviour.save_state()
    return load(save({k: t.contiguous() for k, t in tensors.items()}, metadata=meta)), meta


def test_momentum_survives_a_save_and_load(world) -> None:
    env = _env(world)
    honest = make_behaviour("honest", 1, ROSTER)
    honest.prepare(env)
    copy = make_behaviour("honest", 1, ROSTER)
    copy.load_state(*_round_trip(honest))
    assert copy.state.windows_trained == 1
    assert all(torch.equal(copy.state.momentum[n], m) for n, m in honest.state.momentum.items())


@pytest.mark.parametrize("name", ["copycat", "copycat_noisy"])
def test_copycat_relabels_the_victims_file_and_the_copy_check_catches_it(world, name: str) -> None:
    env = _env(world)
    copycat = make_behaviour(name, 4, ROSTER)
    victim = copycat.victim(env.window)
    assert ROSTER[victim] == "honest"
    original = make_behaviour("honest", victim, ROSTER).prepare(env)
    assert copycat.prepare(env) is None  # nothing to copy before the victim uploads
    env_after = _env(world, uploads={victim: original})
    sub = _parse(copycat.finish(env_after, None), 3, 4, env.spec)
    ref = _parse(original, 3, victim, env.spec)
    assert isinstance(sub, Submission) and sub.content_hash != ref.content_hash
    assert sub.probe == ref.probe
    for n, (idx, vals) in ref.grads.items():
        assert torch.equal(sub.grads[n][0], idx)
        assert torch.equal(sub.grads[n][1], vals) == (name == "copycat")
    found = find_copies({victim: ref.grads, 4: sub.grads}, {victim: 1.0, 4: 2.0},
                        {victim: ref.content_hash, 4: sub.content_hash})
    assert found[4].partner == victim and found[4].overlap == 1.0 and found[4].action == "ban"
    assert copycat.finish(_env(world), None) is None  # the victim uploaded nothing: neither does it


def test_sybils_share_one_update_and_need_their_leader_first(world) -> None:
    env = _env(world)
    follower = make_behaviour("sybil", 7, ROSTER)
    with pytest.raises(RuntimeError, match="before its leader uid 6"):
        follower.prepare(env)
    leader = make_behaviour("sybil", 6, ROSTER)
    a, b = _parse(leader.prepare(env), 3, 6, env.spec), _parse(follower.prepare(env), 3, 7, env.spec)
    assert a.content_hash != b.content_hash
    assert all(torch.equal(a.grads[n][1], b.grads[n][1]) for n in a.grads)
    assert find_copies({6: a.grads, 7: b.grads}, {6: 1.0, 7: 2.0}, {6: "x", 7: "y"})[7].action == "ban"


EXPECTED = {"garbage": (Reason.MALFORMED, "header"), "nan": (Reason.NON_FINITE, "NaN"),
            "wrong_window": (Reason.MALFORMED, "metadata says window"), "pickle": (Reason.MALFORMED, "header"),
            "index_out_of_range": (Reason.MALFORMED, "outside")}


def test_malformed_rotates_through_every_kind_and_each_is_refused_as_intended(world) -> None:
    malformed = Malformed(8, ROSTER)
    seen = set()
    for window in range(len(MALFORMED_KINDS)):
        env = _env(world, window=window)
        kind = malformed.kind(window)
        seen.add(kind)
        verdict = _parse(malformed.prepare(env), window, 8, env.spec)
        reason, words = EXPECTED[kind]
        assert isinstance(verdict, Verdict) and verdict.reason is reason, (kind, verdict)
        assert words in verdict.detail, (kind, verdict.detail)
    assert seen == set(MALFORMED_KINDS)


def _dense(world, sub: Submission) -> dict[str, torch.Tensor]:
    env = _env(world)
    return env.codec.decode_all(sub.grads, env.spec.shapes)


def _cosine(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    x, y = torch.cat([t.flatten() for t in a.values()]), torch.cat([b[n].flatten() for n in a])
    return float(x @ y / (x.norm() * y.norm()))


def test_lazy_and_diligent_train_on_half_and_twice_their_pages_own_pages_first(world) -> None:
    env = _env(world)
    own = own_pages(2, 3, env.corpus, env.cfg)
    pages = extended_pages(2, env, 2)
    assert pages[: len(own)] == own and len(pages) == 2 * len(own) and len(set(pages)) == len(pages)
    lazy = _parse(make_behaviour("lazy", 2, ROSTER).prepare(env), 3, 2, env.spec)
    diligent = _parse(make_behaviour("diligent", 2, ROSTER).prepare(env), 3, 2, env.spec)
    assert lazy.content_hash == _honest_reference(world, 2, pages=own[: len(own) // 2]).content_hash
    assert diligent.content_hash == _honest_reference(world, 2, pages=pages).content_hash
    assert {"lazy", "diligent"} <= HONEST_WORK and not {"alie", "ipm", "sandbagger", "replayer"} & HONEST_WORK


def test_sandbagger_trains_on_one_sequence_but_uploads_a_normal_file(world) -> None:
    env = _env(world)
    sub = _parse(make_behaviour("sandbagger", 2, ROSTER).prepare(env), 3, 2, env.spec)
    ref = _honest_reference(world, 2)
    assert isinstance(sub, Submission) and sub.probe == ref.probe
    for name, (idx, vals) in ref.grads.items():
        assert sub.grads[name][0].shape == idx.shape  # the full top-k: nothing shows the short work
    assert sub.content_hash != ref.content_hash


def test_replayer_reuploads_its_first_update_across_windows_and_processes(world) -> None:
    replayer = make_behaviour("replayer", 2, ROSTER)
    first = _parse(replayer.prepare(_env(world, window=3)), 3, 2, _env(world).spec)
    assert first.content_hash == _honest_reference(world, 2).content_hash
    again = make_behaviour("replayer", 2, ROSTER)
    again.load_state(*_round_trip(replayer))
    later = _parse(again.prepare(_env(world, window=4)), 4, 2, _env(world).spec)
    assert isinstance(later, Submission) and later.window == 4
    assert all(torch.equal(later.grads[n][1], v) and torch.equal(later.grads[n][0], i)
               for n, (i, v) in first.grads.items())


def test_alie_and_ipm_perturb_the_honest_direction_as_byzfl_defines_them(world) -> None:
    env = _env(world)
    alie, ipm = make_behaviour("alie", 2, ROSTER), make_behaviour("ipm", 2, ROSTER)
    updates = alie.page_updates(env)
    assert all(u.shape[0] == 2 * env.cfg.data.pages_per_window for u in updates.values())
    mean = {n: u.mean(0) for n, u in updates.items()}
    crafted = alie.perturb(updates)
    for n, u in updates.items():
        assert torch.allclose(crafted[n], mean[n] + 1.5 * u.std(0))
        assert torch.allclose(ipm.perturb(updates)[n], -2.0 * mean[n])
    honest = _dense(world, _honest_reference(world, 2))
    a = _dense(world, _parse(alie.prepare(env), 3, 2, env.spec))
    i = _dense(world, _parse(ipm.prepare(env), 3, 2, env.spec))
    assert _cosine(i, honest) < -0.3 and _cosine(a, crafted) > 0.3  # what survives the top-k
