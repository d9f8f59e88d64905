from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from gauntlet.config import DataConfig
from gauntlet.data import (
    Corpus,
    assign_pages,
    load_tokenizer,
    pack_tokens,
    page_batches,
    random_pages,
    sample_batches,
)
from gauntlet.prepare import train_tokenizer


def _write_shards(root: Path, sizes: list[int], row_group: int = 4) -> list[str]:
    """Shards of `row_i` texts; returns every row in corpus order."""
    root.mkdir(parents=True, exist_ok=True)
    rows: list[str] = []
    for s, size in enumerate(sizes):
        texts = [f"row {len(rows) + i}: " + "lorem ipsum dolor " * (1 + (len(rows) + i) % 5) for i in range(size)]
        pq.write_table(pa.table({"text": texts, "id": list(range(size))}), root / f"part-{s:03d}.parquet",
                       row_group_size=row_group)
        rows.extend(texts)
    return rows


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    texts = [f"def f{i}(x):\n    return x * {i}  # lorem ipsum dolor\n" for i in range(200)]
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer(texts, vocab_size=300).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return load_tokenizer(tokenizer_dir)


def test_corpus_reads_rows_across_shards_and_row_groups(tmp_path):
    rows = _write_shards(tmp_path, [10, 7, 13])
    corpus = Corpus(tmp_path)
    assert corpus.n_rows == 30
    assert corpus.n_pages(4) == 7  # the partial last page is never assigned
    for start in range(30):
        for stop in range(start, 31):
            assert corpus.rows(start, stop) == rows[start:stop]
    assert corpus.page_texts(2, 4) == rows[8:12]  # spans shard 0 and shard 1
    assert corpus.page_texts(6, 4) == rows[24:28]


def test_corpus_counts_rows_from_metadata_and_maps_nulls_to_empty(tmp_path):
    pq.write_table(pa.table({"text": ["a", None, "c"]}), tmp_path / "x.parquet")
    corpus = Corpus(tmp_path)
    assert corpus.n_rows == 3
    assert corpus.page_texts(0, 3) == ["a", "", "c"]


def test_corpus_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Corpus(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no \\*.parquet shards"):
        Corpus(tmp_path)
    pq.write_table(pa.table({"content": ["x"]}), tmp_path / "a.parquet")
    with pytest.raises(ValueError, match="no 'text' column"):
        Corpus(tmp_path)
    other = tmp_path / "ok"
    _write_shards(other, [5])
    corpus = Corpus(other)
    with pytest.raises(IndexError, match="page 2 out of range: the corpus has 2 pages of 2 rows"):
        corpus.page_texts(2, 2)
    with pytest.raises(IndexError):
        corpus.page_texts(-1, 2)
    with pytest.raises(ValueError, match="rows_per_page"):
        corpus.n_pages(0)


# Golden values: a change here would make miners and validators disagree on data.
def test_assign_pages_golden():
    assert assign_pages(seed=0, offset=0, n=6, n_pages=1000) == GOLDEN_ASSIGN_0
    assert assign_pages(seed=7, offset=1200 * 6, n=6, n_pages=10_000) == GOLDEN_ASSIGN_7
    assert random_pages(seed=42, n=6, n_pages=1000) == GOLDEN_RANDOM_42


GOLDEN_ASSIGN_0 = [105, 931, 955, 651, 53, 574]
GOLDEN_ASSIGN_7 = [3227, 3386, 1879, 3567, 2794, 6854]
GOLDEN_RANDOM_42 = [143, 630, 620, 727, 428, 843]
GOLDEN_SAMPLE = [8, 25, 26]


def test_assign_pages_follows_the_documented_rule():
    """Draw i = blake2b-128("gauntlet-pages/v1|seed|offset|i") mod n_pages, repeats skipped."""

    def draw(seed: int, offset: int, i: int, n_pages: int) -> int:
        digest = hashlib.blake2b(f"gauntlet-pages/v1|{seed}|{offset}|{i}".encode(), digest_size=16).digest()
        return int.from_bytes(digest, "big") % n_pages

    for seed, offset in [(0, 0), (7, 7200), (250, 123456)]:
        naive: list[int] = []
        i = 0
        while len(naive) < 5:
            page = draw(seed, offset, i, 20)
            naive += [] if page in naive else [page]
            i += 1
        assert assign_pages(seed, offset, 5, 20) == naive


def test_assign_pages_properties():
    pages = assign_pages(seed=3, offset=18, n=6, n_pages=50)
    assert len(pages) == len(set(pages)) == 6 and all(0 <= p < 50 for p in pages)
    assert pages == assign_pages(seed=3, offset=18, n=6, n_pages=50)
    assert pages != assign_pages(seed=4, offset=18, n=6, n_pages=50)
    assert pages != assign_pages(seed=3, offset=24, n=6, n_pages=50)
    assert sorted(assign_pages(seed=1, offset=0, n=9, n_pages=9)) == list(range(9))
    assert assign_pages(seed=1, offset=0, n=0, n_pages=9) == []
    # the validator's random pages come from another stream than any peer's
    assert random_pages(3, 6, 50) != assign_pages(3, 0, 6, 50)
    assert random_pages(2**200 + 5, 3, 50) == random_pages(2**200 + 5, 3, 50)  # block-hash-sized seeds


def test_assign_pages_is_roughly_uniform():
    counts = [0] * 10
    for seed in range(2000):
        for page in assign_pages(seed, 0, 1, 10):
            counts[page] += 1
    assert min(counts) > 150 and max(counts) < 250  # expected 200 each


def test_assign_pages_errors():
    with pytest.raises(ValueError, match="7 distinct pages asked for but the corpus has 6"):
        assign_pages(0, 0, 7, 6)
    with pytest.raises(ValueError, match="n must be >= 0"):
        random_pages(0, -1, 6)


def test_sample_batches():
    batches = [torch.full((1, 2), i) for i in range(30)]
    picked = sample_batches(batches, 0.1, seed=5)
    assert [int(b[0, 0]) for b in picked] == GOLDEN_SAMPLE
    assert len(sample_batches(batches, 0.1, seed=6)) == 3
    assert len(sample_batches(batches[:5], 0.1, seed=5)) == 1  # max(1, ...)
    assert len(sample_batches([torch.zeros(1)] * 100, 0.29, seed=0)) == 29  # no float floor surprise
    assert sample_batches(batches, 1.0, seed=9) == batches
    ids = [int(b[0, 0]) for b in picked]
    assert ids == sorted(ids)
    seen = {tuple(int(b[0, 0]) for b in sample_batches(batches, 0.1, s)) for s in range(20)}
    assert len(seen) > 10  # depends on the seed
    with pytest.raises(ValueError, match="no batches"):
        sample_batches([], 0.1, 0)
    with pytest.raises(ValueError, match="rate"):
        sample_batches(batches, 0.0, 0)


def test_load_tokenizer(tokenizer_dir, tmp_path):
    tok = load_tokenizer(tokenizer_dir)
    text = "def f3(x):\n    return x * 3  # héllo ✓\n"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    with pytest.raises(FileNotFoundError, match="gauntlet data prepare"):
        load_tokenizer(tmp_path / "missing")
    no_eos = tmp_path / "no_eos"
    tok.save_pretrained(str(no_eos))
    config = json.loads((no_eos / "tokenizer_config.json").read_text())
    config.pop("eos_token", None)
    (no_eos / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="no eos token"):
        load_tokenizer(no_eos)


def test_pack_tokens_joins_documents_with_eos_and_drops_the_tail(tokenizer):
    texts = ["def f1(x):", "", "return x * 2"]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    eos = tokenizer.eos_token_id
    stream = ids[0] + [eos] + ids[1] + [eos] + ids[2] + [eos]
    packed = pack_tokens(tokenizer, texts, seq_len=3)
    assert packed.dtype == torch.long and packed.shape == (len(stream) // 3, 3)
    assert packed.flatten().tolist() == stream[: packed.numel()]
    assert pack_tokens(tokenizer, [], 4).shape == (0, 4)
    assert pack_tokens(tokenizer, texts, seq_len=10_000).shape == (0, 10_000)
    with pytest.raises(ValueError, match="seq_len"):
        pack_tokens(tokenizer, texts, 1)


def test_page_batches_packs_pages_separately_and_batches(tmp_path, tokenizer):
    rows = _write_shards(tmp_path, [12, 12])
    corpus = Corpus(tmp_path)
    cfg = DataConfig(rows_per_page=4, seq_len=8, batch_size=3)
    pages = [5, 0, 2]
    batches = page_batches(corpus, tokenizer, pages, cfg)
    expected = torch.cat([pack_tokens(tokenizer, rows[p * 4 : p * 4 + 4], 8) for p in pages])
    assert len(batches) >= 3
    assert all(b.shape[1] == 8 and b.dtype == torch.long for b in batches)
    assert all(b.shape[0] == 3 for b in batches[:-1]) and 1 <= batches[-1].shape[0] <= 3
    assert torch.equal(torch.cat(batches), expected)
    # a second read comes from the cache and equals the first; mutating output leaves the cache intact
    batches[0].zero_()
    again = page_batches(corpus, tokenizer, pages, cfg)
    assert torch.equal(torch.cat(again), expected)
    with pytest.raises(ValueError, match="no full sequence"):
        page_batches(corpus, tokenizer, [0], DataConfig(rows_per_page=1, seq_len=4096, batch_size=2))
    with pytest.raises(ValueError, match="no pages"):
        page_batches(corpus, tokenizer, [], cfg)


def test_page_cache_is_bounded(tmp_path, tokenizer):
    _write_shards(tmp_path, [20])
    corpus = Corpus(tmp_path, cache_pages=3)
    for page in range(10):
        corpus.page_tokens(page, 2, tokenizer, 8)
    assert len(corpus._cache) == 3
