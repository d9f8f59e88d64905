"""`gauntlet data prepare`: a local corpus and tokenizer from text that is on every machine.

The real network trains on FineWeb-edu with the LLaMA-2 tokenizer, neither of which can be
fetched here. The Python standard library's own sources are present wherever Python is, so the
default corpus is built from them: real, varied text, about 4.7 MB, the same bytes for everyone
on the same Python. Rows are chunks of about 1-2 KB cut at blank lines (FineWeb rows are
documents of that order), written as Parquet shards with a `text` column, so `Corpus` reads a
real FineWeb shard folder the same way. The tokenizer is a byte-level BPE trained on the corpus
(any text round-trips, no unknown tokens), saved as a transformers tokenizer folder.

Outputs are published atomically (built in a hidden temporary folder, then renamed), and an
existing output is kept unless `force`: a run that was stopped leaves no half-written corpus.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import sysconfig
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from gauntlet.config import DataConfig
from gauntlet.data import load_tokenizer

EOS = "<|endoftext|>"
ROWS_PER_SHARD = 2000
ROW_GROUP_ROWS = 500
"""Small row groups let a page read decompress a few hundred rows, not a whole shard."""
MIN_ROW_CHARS = 1024
MAX_ROW_CHARS = 2048
TEXT_SUFFIXES = frozenset({".py", ".txt", ".md", ".rst"})


@dataclass(frozen=True)
class PrepareResult:
    corpus: Path
    tokenizer: Path
    rows: int
    shards: int
    vocab_size: int
    corpus_built: bool
    """False when an existing corpus was kept (no `force`)."""
    tokenizer_built: bool
    seconds: float

    @property
    def skipped(self) -> bool:
        return not (self.corpus_built or self.tokenizer_built)


def source_files(source: Path | None) -> list[Path]:
    """Text files of a source folder in a stable order; default: the stdlib's top-level modules."""
    if source is None:
        return sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    if not source.is_dir():
        raise FileNotFoundError(f"source folder {source} does not exist")
    files = [
        p for p in source.rglob("*")
        if p.is_file() and p.suffix in TEXT_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(source).parts)
    ]
    if not files:
        raise ValueError(f"source folder {source} holds no {', '.join(sorted(TEXT_SUFFIXES))} files")
    return sorted(files, key=lambda p: p.relative_to(source).as_posix())


def _pieces(paragraph: str) -> Iterator[str]:
    """A paragraph longer than a row, cut at line ends (lines longer than a row are cut hard)."""
    if len(paragraph) <= MAX_ROW_CHARS:
        yield paragraph
        return
    current = ""
    for line in paragraph.splitlines(keepends=True):
        for start in range(0, len(line), MAX_ROW_CHARS):
            part = line[start : start + MAX_ROW_CHARS]
            if current and len(current) + len(part) > MAX_ROW_CHARS:
                yield current
                current = ""
            current += part
    if current:
        yield current


def chunk_text(text: str) -> list[str]:
    """Rows of one document: blank-line paragraphs joined until a row reaches MIN_ROW_CHARS."""
    rows: list[str] = []
    current = ""
    for paragraph in re.split(r"\n[ \t]*\n", text):
        for piece in _pieces(paragraph):
            if not piece.strip():
                continue
            if current and len(current) + 2 + len(piece) > MAX_ROW_CHARS:
                rows.append(current)
                current = ""
            current = f"{current}\n\n{piece}" if current else piece
            if len(current) >= MIN_ROW_CHARS:
                rows.append(current)
                current = ""
    if current:
        rows.append(current)
    return rows


def corpus_rows(files: Iterable[Path]) -> Iterator[str]:
    """Rows of all files in order; a row never spans two files."""
    for path in files:
        yield from chunk_text(path.read_bytes().decode("utf-8", errors="replace"))


def _publish(tmp: Path, out: Path) -> None:
    """Replace `out` by the finished `tmp` folder with renames only."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def _scratch(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def _batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def write_corpus(rows: Iterable[str], out: Path) -> tuple[int, int]:
    """Parquet shards of ROWS_PER_SHARD rows (zstd), published at once; returns (rows, shards)."""
    tmp = _scratch(out)
    schema = pa.schema([("text", pa.string())])
    n_rows = n_shards = 0
    try:
        for batch in _batched(rows, ROWS_PER_SHARD):
            table = pa.table({"text": batch}, schema=schema)
            pq.write_table(table, tmp / f"shard-{n_shards:05d}.parquet", compression="zstd",
                           row_group_size=ROW_GROUP_ROWS)
            n_rows, n_shards = n_rows + len(batch), n_shards + 1
        if n_rows == 0:
            raise ValueError("the source produced no text rows")
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when published
    return n_rows, n_shards


def read_corpus_rows(corpus: Path) -> Iterator[str]:
    """Every non-empty row of a written corpus: the tokenizer learns from exactly what is served."""
    for shard in sorted(corpus.glob("*.parquet")):
        with pq.ParquetFile(shard) as file:
            for batch in file.iter_batches(columns=["text"]):
                yield from (text for text in batch.column(0).to_pylist() if text)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE: every string encodes (no unknown token) and decodes back exactly."""
    if vocab_size < 257:
        raise ValueError(f"vocab_size must exceed the 256 byte tokens plus {EOS}; got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS)


def _save_tokenizer(tokenizer: PreTrainedTokenizerFast, out: Path) -> None:
    tmp = _scratch(out)
    try:
        tokenizer.save_pretrained(str(tmp))
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _corpus_stats(corpus: Path) -> tuple[int, int]:
    shards = sorted(corpus.glob("*.parquet"))
    return sum(pq.ParquetFile(s).metadata.num_rows for s in shards), len(shards)


def prepare(
    source: Path | None,
    corpus_out: Path,
    tokenizer_out: Path,
    vocab_size: int = 4096,
    tokenizer: Path | None = None,
    force: bool = False,
) -> PrepareResult:
    """Build what is missing (or everything with `force`): the corpus, then the tokenizer.

    The tokenizer is trained on the corpus as written, or copied from `tokenizer` (an existing
    local Hugging Face tokenizer folder, e.g. LLaMA-2's) when given.
    """
    start = time.perf_counter()
    corpus_out, tokenizer_out = Path(corpus_out), Path(tokenizer_out)
    build_corpus = force or not any(corpus_out.glob("*.parquet"))
    if build_corpus:
        rows, shards = write_corpus(corpus_rows(source_files(source)), corpus_out)
    else:
        rows, shards = _corpus_stats(corpus_out)
    build_tok = force or not (tokenizer_out / "tokenizer_config.json").is_file()
    if build_tok:
        if tokenizer is not None:
            tok = load_tokenizer(tokenizer)
        else:
            tok = train_tokenizer(read_corpus_rows(corpus_out), vocab_size)
        _save_tokenizer(tok, tokenizer_out)
    else:
        tok = load_tokenizer(tokenizer_out)
    return PrepareResult(corpus_out, tokenizer_out, rows, shards, len(tok), build_corpus, build_tok,
                         time.perf_counter() - start)


def _state(built: bool) -> str:
    return "built" if built else "kept (use --force to rebuild)"


def _run(args: argparse.Namespace) -> int:
    try:
        result = prepare(args.source, args.out, args.tokenizer_out, args.vocab_size, args.tokenizer, args.force)
    except (OSError, ValueError) as exc:
        print(f"gauntlet data prepare: {exc}", file=sys.stderr)
        return 2
    print(f"corpus    {result.corpus}: {result.rows} rows in {result.shards} shards, {_state(result.corpus_built)}")
    print(f"tokenizer {result.tokenizer}: vocab {result.vocab_size}, {_state(result.tokenizer_built)}")
    print(f"done in {result.seconds:.1f} s")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `data prepare` to the CLI's subcommands."""
    data = sub.add_parser("data", help="local corpus and tokenizer")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser("prepare", help="build the corpus shards and the tokenizer from local text",
                            description=__doc__.split("\n\n")[0])
    defaults = DataConfig()
    p.add_argument("--source", type=Path, default=None,
                   help="folder of .py/.txt/.md/.rst files (default: the Python standard library)")
    p.add_argument("--out", type=Path, default=Path(defaults.corpus), help="corpus folder (default: %(default)s)")
    p.add_argument("--tokenizer-out", type=Path, default=Path(defaults.tokenizer),
                   help="tokenizer folder (default: %(default)s)")
    p.add_argument("--tokenizer", type=Path, default=None,
                   help="use this local Hugging Face tokenizer folder instead of training one")
    p.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="rebuild outputs that already exist")
    p.set_defaults(func=_run)
