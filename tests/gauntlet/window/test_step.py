"""Stage "step": which peers' updates are merged (the gather list, or the start-up rule)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from gauntlet.codec import DCTCodec
from gauntlet.config import AggregationConfig
from gauntlet.window.step import choose_aggregated

SHAPES = {"w": (32, 32), "b": (32,)}
CODEC = DCTCodec(chunk=16, topk=8)


def _subs() -> dict[int, SimpleNamespace]:
    """uids 1-5 honest (a common direction plus their own), 6 and 7 the same sign-flipped file."""
    gen = torch.Generator().manual_seed(5)
    common = {n: torch.randn(s, generator=gen) for n, s in SHAPES.items()}
    subs = {u: SimpleNamespace(grads=CODEC.encode_all({n: common[n] + 0.8 * torch.randn(s, generator=gen)
                                                       for n, s in SHAPES.items()})) for u in range(1, 6)}
    flipped = CODEC.encode_all({n: -t for n, t in common.items()})
    return subs | {6: SimpleNamespace(grads=flipped), 7: SimpleNamespace(grads=flipped)}


def test_a_gather_list_decides_alone_whatever_the_startup_rule():
    subs, krum = _subs(), AggregationConfig(startup="multi_krum")
    assert choose_aggregated([1, 2, 6, 7], [2, 6, 9], subs, CODEC, SHAPES, krum) == [2, 6]


def test_before_the_first_list_all_accepted_or_the_multi_krum_subset():
    subs = _subs()
    accepted = sorted(subs)
    assert choose_aggregated(accepted, None, subs, CODEC, SHAPES, AggregationConfig()) == accepted  # paper: all
    krum = AggregationConfig(startup="multi_krum", startup_hostile=0.4)
    assert choose_aggregated(accepted, None, subs, CODEC, SHAPES, krum) == [1, 2, 3, 4, 5]
    # too few files for any f: everyone, as under `all`
    assert choose_aggregated([1, 6], None, subs, CODEC, SHAPES, krum) == [1, 6]
    assert choose_aggregated([], None, subs, CODEC, SHAPES, krum) == []
