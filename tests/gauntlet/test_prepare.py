from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gauntlet.data import Corpus, load_tokenizer
from gauntlet.prepare import (
    MAX_ROW_CHARS,
    MIN_ROW_CHARS,
    chunk_text,
    prepare,
    register,
    source_files,
)


def _source(root: Path) -> Path:
    """A small mixed folder: paragraphs of prose and code, one very long line, a hidden dir."""
    root.mkdir()
    (root / "a.md").write_text("\n\n".join(f"Paragraph {i} about gradients. " * 6 for i in range(40)))
    (root / "sub").mkdir()
    (root / "sub" / "b.py").write_text(
        "\n\n".join(f"def f{i}(x):\n    return x + {i}  # ünïcode ✓" for i in range(120))
    )
    (root / "c.txt").write_text("x" * 5000 + "\n")  # one line longer than a row
    (root / "ignored.bin").write_bytes(b"\x00\x01")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD.txt").write_text("not corpus text")
    return root


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gauntlet")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_chunk_text_rows_are_bounded_and_lose_no_text():
    text = "\n\n".join(f"para {i} " * (i * 7 % 150 + 1) for i in range(300)) + "\n\n" + "y" * 4500
    rows = chunk_text(text)
    assert all(len(r) <= MAX_ROW_CHARS for r in rows)
    # a row ends short only where the next paragraph would push it past MAX_ROW_CHARS
    assert sum(len(r) >= MIN_ROW_CHARS for r in rows) >= 0.9 * len(rows)
    assert "".join(rows).replace("\n", "") == text.replace("\n", "")
    assert chunk_text("") == [] and chunk_text("\n\n  \n\n") == []


def test_source_files_order_and_filter(tmp_path):
    src = _source(tmp_path / "src")
    assert [p.relative_to(src).as_posix() for p in source_files(src)] == ["a.md", "c.txt", "sub/b.py"]
    with pytest.raises(FileNotFoundError):
        source_files(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no"):
        source_files(tmp_path / "empty")


def test_prepare_small_source_round_trips(tmp_path):
    src = _source(tmp_path / "src")
    result = prepare(src, tmp_path / "corpus", tmp_path / "tok", vocab_size=400)
    assert result.corpus_built and result.tokenizer_built and not result.skipped
    corpus = Corpus(tmp_path / "corpus")
    assert corpus.n_rows == result.rows > 5 and result.shards == 1
    rows = corpus.rows(0, corpus.n_rows)
    joined = "".join(rows)
    assert "Paragraph 39" in joined and "def f119" in joined and "not corpus text" not in joined
    assert all(0 < len(r) <= MAX_ROW_CHARS for r in rows)
    tok = load_tokenizer(tmp_path / "tok")
    assert len(tok) == result.vocab_size == 400
    assert tok.eos_token == tok.bos_token == tok.pad_token == "<|endoftext|>"
    for text in rows[:5] + ["unseen text: 東京 ⚡ \t\r\n"]:
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert not list(tmp_path.glob(".*"))  # no temporary folders left behind


def test_prepare_is_idempotent_and_force_rebuilds(tmp_path):
    src = _source(tmp_path / "src")
    first = prepare(src, tmp_path / "corpus", tmp_path / "tok", vocab_size=400)
    shard = next((tmp_path / "corpus").glob("*.parquet"))
    before = shard.stat().st_mtime_ns
    again = prepare(src, tmp_path / "corpus", tmp_path / "tok", vocab_size=400)
    assert again.skipped and again.rows == first.rows and again.vocab_size == 400
    assert shard.stat().st_mtime_ns == before
    # a missing tokenizer alone is rebuilt from the kept corpus, identically (training is deterministic)
    tok_json = (tmp_path / "tok" / "tokenizer.json").read_bytes()
    for f in (tmp_path / "tok").iterdir():
        f.unlink()
    (tmp_path / "tok").rmdir()
    rebuilt = prepare(src, tmp_path / "corpus", tmp_path / "tok", vocab_size=400)
    assert not rebuilt.corpus_built and rebuilt.tokenizer_built
    assert (tmp_path / "tok" / "tokenizer.json").read_bytes() == tok_json
    forced = prepare(src, tmp_path / "corpus", tmp_path / "tok", vocab_size=300, force=True)
    assert forced.corpus_built and forced.tokenizer_built and forced.vocab_size == 300


def test_prepare_reuses_an_existing_tokenizer(tmp_path):
    src = _source(tmp_path / "src")
    prepare(src, tmp_path / "c1", tmp_path / "t1", vocab_size=350)
    result = prepare(src, tmp_path / "c2", tmp_path / "t2", vocab_size=999, tokenizer=tmp_path / "t1")
    assert result.vocab_size == 350
    a, b = load_tokenizer(tmp_path / "t1"), load_tokenizer(tmp_path / "t2")
    text = "def f7(x): return x"
    assert a(text)["input_ids"] == b(text)["input_ids"]
    with pytest.raises(FileNotFoundError, match="tokenizer folder"):
        prepare(src, tmp_path / "c3", tmp_path / "t3", tokenizer=tmp_path / "nope")


def test_prepare_default_source_is_the_stdlib(tmp_path):
    result = prepare(None, tmp_path / "corpus", tmp_path / "tok")
    assert result.rows > 2000 and result.shards >= 2 and result.vocab_size == 4096
    corpus = Corpus(tmp_path / "corpus")
    assert corpus.n_pages(100) >= 20
    tok = load_tokenizer(tmp_path / "tok")
    text = corpus.page_texts(3, 10)[0]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert len(ids) < len(text) / 2.5  # BPE trained on this text compresses it


def test_cli_prepare(tmp_path, capsys):
    src = _source(tmp_path / "src")
    argv = ["data", "prepare", "--source", str(src), "--out", str(tmp_path / "c"),
            "--tokenizer-out", str(tmp_path / "t"), "--vocab-size", "300"]
    assert _run_cli(argv) == 0
    assert "built" in capsys.readouterr().out
    assert _run_cli(argv) == 0
    assert "kept (use --force to rebuild)" in capsys.readouterr().out
    assert _run_cli(argv + ["--force"]) == 0
    assert _run_cli(["data", "prepare", "--source", str(tmp_path / "none"), "--out", str(tmp_path / "c2")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert _run_cli(argv[:-1] + ["100", "--force"]) == 2
    assert "vocab_size" in capsys.readouterr().err
