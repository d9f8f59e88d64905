"""Corpus pages and training batches, shared by miners and the validator (GAUNTLET.md step 1).

A page is `rows_per_page` consecutive rows of the corpus seen as one sequence of rows across its
sorted Parquet shards. Which pages a peer trains on in a window is a pure function of integers,
computed with blake2b rather than a numpy or torch RNG, whose streams are not promised to stay
the same across library versions: a validator and a miner with different library versions must
still agree on every page, or honest peers would be scored on data they never saw.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq
import torch
from torch import Tensor
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from gauntlet.config import DataConfig

TEXT_COLUMN = "text"


class Corpus:
    """A folder of Parquet shards (`*.parquet`, sorted by name) with a `text` column.

    Only footers are read on opening; a page read decompresses just the row groups it spans.
    Tokenized pages are kept in a small LRU cache, since the validator reads a peer's pages
    again after the peer and the random pages once per peer.
    """

    def __init__(self, root: str | Path, cache_pages: int = 64) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"corpus folder {self.root} does not exist; run `gauntlet data prepare`")
        self.shards = sorted(self.root.glob("*.parquet"))
        if not self.shards:
            raise FileNotFoundError(f"corpus folder {self.root} holds no *.parquet shards; run `gauntlet data prepare`")
        self._group_starts: list[list[int]] = []  # per shard: first row of each row group, then its row count
        for path in self.shards:
            meta = pq.ParquetFile(path).metadata
            if TEXT_COLUMN not in meta.schema.names:
                raise ValueError(f"shard {path} has no {TEXT_COLUMN!r} column (columns: {meta.schema.names})")
            starts = [0]
            for i in range(meta.num_row_groups):
                starts.append(starts[-1] + meta.row_group(i).num_rows)
            self._group_starts.append(starts)
        self._shard_starts = [0]
        for starts in self._group_starts:
            self._shard_starts.append(self._shard_starts[-1] + starts[-1])
        self.n_rows = self._shard_starts[-1]
        self._cache: OrderedDict[tuple, Tensor] = OrderedDict()
        self._cache_pages = cache_pages

    def n_pages(self, rows_per_page: int) -> int:
        """Whole pages only: a last partial page is never assigned."""
        if rows_per_page < 1:
            raise ValueError(f"rows_per_page must be >= 1, got {rows_per_page}")
        return self.n_rows // rows_per_page

    def rows(self, start: int, stop: int) -> list[str]:
        """Rows [start, stop) across shards, reading only the row groups they span."""
        if not 0 <= start <= stop <= self.n_rows:
            raise IndexError(f"rows [{start}, {stop}) outside the corpus's {self.n_rows} rows")
        out: list[str] = []
        shard = bisect.bisect_right(self._shard_starts, start) - 1
        while start < stop:
            base = self._shard_starts[shard]
            lo, hi = start - base, min(stop, self._shard_starts[shard + 1]) - base
            out.extend(self._read_shard(shard, lo, hi))
            start, shard = base + hi, shard + 1
        return out

    def _read_shard(self, shard: int, lo: int, hi: int) -> list[str]:
        starts = self._group_starts[shard]
        first = bisect.bisect_right(starts, lo) - 1
        last = bisect.bisect_left(starts, hi) - 1  # last group holding row hi - 1
        with pq.ParquetFile(self.shards[shard]) as file:
            table = file.read_row_groups(list(range(first, last + 1)), columns=[TEXT_COLUMN])
        texts = table.column(TEXT_COLUMN).slice(lo - starts[first], hi - lo).to_pylist()
        return [t if t is not None else "" for t in texts]

    def page_texts(self, page: int, rows_per_page: int) -> list[str]:
        n_pages = self.n_pages(rows_per_page)
        if not 0 <= page < n_pages:
            raise IndexError(f"page {page} out of range: the corpus has {n_pages} pages of {rows_per_page} rows")
        return self.rows(page * rows_per_page, (page + 1) * rows_per_page)

    def page_tokens(self, page: int, rows_per_page: int, tokenizer: PreTrainedTokenizerFast, seq_len: int) -> Tensor:
        """`pack_tokens` of one page, cached; (N, seq_len) int64, a fresh tensor on every call."""
        key = (page, rows_per_page, seq_len, tokenizer)  # the tokenizer by identity, kept alive
        cached = self._cache.get(key)
        if cached is None:
            cached = pack_tokens(tokenizer, self.page_texts(page, rows_per_page), seq_len).to(torch.int32)
            self._cache[key] = cached
            while len(self._cache) > self._cache_pages:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return cached.long()


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """A local Hugging Face tokenizer folder (no hub access); it must define an eos token."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer folder {path} does not exist; run `gauntlet data prepare`")
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise ValueError(f"tokenizer in {path} is not a fast (tokenizers-backed) tokenizer: {type(tokenizer).__name__}")
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer in {path} defines no eos token; documents are joined with it")
    return tokenizer


def pack_tokens(tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], seq_len: int) -> Tensor:
    """Documents joined by eos and cut into full sequences: (N, seq_len) int64, no padding.

    Each document is followed by eos, so a sequence may hold the end of one document and the
    start of the next (as in FineWeb pretraining); the tail shorter than seq_len is dropped.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer defines no eos token")
    stream: list[int] = []
    if texts:
        for ids in tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]:
            stream.extend(ids)
            stream.append(eos)
    n = len(stream) // seq_len
    return torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len)  # (N, T)


def page_batches(
    corpus: Corpus, tokenizer: PreTrainedTokenizerFast, pages: Sequence[int], data_cfg: DataConfig
) -> list[Tensor]:
    """Batches (B, T) of the pages' sequences, in page order; the last batch may be shorter.

    Each page is packed on its own, so a page's sequences do not depend on which pages come
    with it (and cached pages are reused whatever the assignment).
    """
    if not pages:
        raise ValueError("no pages given")
    seqs = torch.cat([corpus.page_tokens(p, data_cfg.rows_per_page, tokenizer, data_cfg.seq_len) for p in pages])
    if len(seqs) == 0:
        raise ValueError(
            f"pages {list(pages)} hold no full sequence of {data_cfg.seq_len} tokens; "
            "lower data.seq_len or raise data.rows_per_page"
        )
    return list(seqs.split(data_cfg.batch_size))  # each (B, T)


def _draw(tag: str, *parts: int) -> int:
    text = "|".join([tag, *(str(int(p)) for p in parts)])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=16).digest(), "big")


def _distinct_pages(tag: str, key: tuple[int, ...], n: int, n_pages: int) -> list[int]:
    """n distinct pages: draw i is blake2b(tag, key, i) mod n_pages, repeats skipped."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n > n_pages:
        raise ValueError(
            f"{n} distinct pages asked for but the corpus has {n_pages}; use a larger corpus, "
            "fewer pages per window or fewer rows per page"
        )
    chosen: list[int] = []
    seen: set[int] = set()
    i = 0
    while len(chosen) < n:
        page = _draw(tag, *key, i) % n_pages
        i += 1
        if page not in seen:
            seen.add(page)
            chosen.append(page)
    return chosen


def assign_pages(seed: int, offset: int, n: int, n_pages: int) -> list[int]:
    """A peer's pages for a window: `assign_pages(uid, window * pages_per_window, ...)`.

    Distinct within a call (no page is trained twice in a window); consensus-critical: the
    golden values in the tests pin it.
    """
    return _distinct_pages("gauntlet-pages/v1", (seed, offset), n, n_pages)


def random_pages(seed: int, n: int, n_pages: int) -> list[int]:
    """The validator's random pages for a window, from the window's (stored) random seed."""
    return _distinct_pages("gauntlet-random-pages/v1", (seed,), n, n_pages)


def sample_batches(batches: Sequence[Tensor], rate: float, seed: int) -> list[Tensor]:
    """`max(1, floor(rate * len(batches)))` of the batches, chosen by seed, in their order.

    The small epsilon makes `floor` exact where `rate * n` lands a hair under an integer in
    binary floating point (0.29 * 100 = 28.999999999999996).
    """
    if not batches:
        raise ValueError("no batches to sample from")
    if not 0 < rate <= 1:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    k = max(1, math.floor(rate * len(batches) + 1e-9))
    ranked = sorted(range(len(batches)), key=lambda i: _draw("gauntlet-sample/v1", seed, i))
    return [batches[i] for i in sorted(ranked[:k])]
