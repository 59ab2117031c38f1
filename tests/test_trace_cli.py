"""``kvsim-trace``: convert, stats and gen; exit codes and no partial output on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from traces import read_trace
from traces.cli import main

MOONCAKE = Path(__file__).resolve().parents[1] / ".." / "shared" / "traces" / "mooncake_conversation_trace.jsonl"


def test_gen_then_stats_reports_the_generated_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "g.parquet"
    assert main(["gen", "rag", "--n", "120", "--seed", "3", "--param", "prefix_zipf=1.5", "-o", str(out)]) == 0
    assert len(read_trace(out)) == 120
    capsys.readouterr()
    assert main(["stats", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["requests"] == 120 and 0 < stats["reuse_ratio"] < 1
    assert stats["categories"]["rag"]["requests"] == 120


def test_bad_input_exits_2_with_one_line_and_leaves_no_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text('{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [1]}\n{"timestamp": 1,\n')
    out = tmp_path / "out.parquet"
    assert main(["convert", str(src), "--format", "mooncake", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "line 2" in err and "malformed JSON" in err
    assert list(tmp_path.iterdir()) == [src]


def test_gen_with_an_unknown_parameter_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gen", "agent", "--param", "turns=3", "-o", str(tmp_path / "a.parquet")]) == 2
    assert "no parameter 'turns'" in capsys.readouterr().err
    assert not (tmp_path / "a.parquet").exists()


def test_an_output_not_named_parquet_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # It would be Parquet under a .csv name, which no reader then recognises.
    assert main(["gen", "rag", "--n", "20", "-o", str(tmp_path / "g.csv")]) == 2
    assert "name it *.parquet" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_an_output_that_cannot_be_written_is_one_line_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An output under a file, or one that is a directory, was an OS error's stack trace once
    the trace had been read (for a large trace, minutes later)."""
    from conf.collect import main as collect

    blocker, folder = tmp_path / "afile", tmp_path / "folder.parquet"
    blocker.write_text("")
    folder.mkdir()
    src = tmp_path / "t.jsonl"
    src.write_text('{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [1]}\n')
    under_file = f"cannot be written: {blocker} is a file, not a directory"
    for args, message in (
        (["convert", str(src), "-o", str(blocker / "x.parquet")], f"{blocker / 'x.parquet'}: {under_file}"),
        (
            ["gen", "rag", "--n", "20", "-o", str(blocker / "a" / "x.parquet")],
            f"{blocker / 'a' / 'x.parquet'}: {under_file}",
        ),
        (["convert", str(src), "-o", str(folder)], f"{folder}: cannot be written: it is a directory; give a file name"),
    ):
        assert main(args) == 2
        assert capsys.readouterr().err == f"kvsim-trace: error: {message}\n"
    sweep = tmp_path / "sweep"
    (sweep / "run").mkdir(parents=True)
    (sweep / "run" / "overrides.json").write_text("{}\n")  # a run that started
    assert collect([str(sweep), "-o", str(blocker / "x.parquet")]) == 2
    assert capsys.readouterr().err == f"kvsim-collect: error: {blocker / 'x.parquet'}: {under_file}\n"
    assert blocker.read_text() == "" and not list(folder.iterdir())


def test_collect_refuses_a_folder_without_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conf.collect import main as collect

    assert collect([str(tmp_path)]) == 2
    assert "no kvsim runs in it" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not MOONCAKE.exists(), reason="../shared/traces/ not present")
def test_convert_and_stats_on_the_mooncake_slice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.parquet"
    assert main(["convert", str(MOONCAKE), "--format", "mooncake", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["stats", str(out)]) == 0
    text = capsys.readouterr().out
    assert "requests        12,031" in text and "mean 12,035.1" in text and "mean 342.6" in text


def test_convert_says_when_it_chains_content_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "content.jsonl"
    rows = [{"timestamp": t, "input_length": 1024, "output_length": 1, "hash_ids": ids}
            for t, ids in ((0, [1, 2]), (1, [3, 2]))]  # fmt: skip
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "c.parquet"
    assert main(["convert", str(src), "-o", str(out)]) == 0
    assert f"kvsim-trace: {src}: block ids repeat after different prefixes" in capsys.readouterr().err
    hashes = read_trace(out).block_hashes
    assert len(set(hashes.tolist())) == 4  # block 2 after 1 and after 3 are two blocks


def test_stats_of_a_hashed_csv_takes_the_block_size_the_error_asks_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "t.csv"
    src.write_text("arrival_s,input_tokens,output_tokens,block_hashes\n0.0,64,4,1 2 3 4\n1.0,64,4,1 2 5 6\n")
    assert main(["stats", str(src), "--format", "csv", "--json"]) == 2
    assert "pass --block-size N to kvsim-trace" in capsys.readouterr().err
    assert main(["stats", str(src), "--format", "csv", "--block-size", "16", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["requests"] == 2 and stats["block_accesses"] == 8


@pytest.mark.parametrize("command", ["convert", "stats"])
@pytest.mark.parametrize("size", ["0", "-512", "99999999999999999999"])
def test_a_block_size_that_is_no_block_size_is_refused_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, size: str
) -> None:
    """0 divided by zero on a hashed file and was taken as unset (the format's own size) on
    one without hashes; a huge size overflowed the block counts (a traceback)."""
    src = tmp_path / "t.csv"
    src.write_text("arrival_s,input_tokens,output_tokens\n0.0,64,4\n")
    out = tmp_path / "out.parquet"
    assert main([command, str(src), "--block-size", size, *(["-o", str(out)] if command == "convert" else [])]) == 2
    assert capsys.readouterr().err == (
        f"kvsim-trace: error: --block-size must be a whole number from 1 to 2,147,483,647 (got {size})\n"
    )
    assert list(tmp_path.iterdir()) == [src]


def test_a_reader_warning_is_one_kvsim_trace_line(tmp_path: Path) -> None:
    """A skipped row is reported as the command's own line, not as Python's warning format
    with the source line that raised it (run as a process: pytest records warnings itself)."""
    src = tmp_path / "azure.csv"
    src.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,374,44\n2023-11-16 18:15:47,0,4\n")
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from traces.cli import main; sys.exit(main(sys.argv[1:]))",
         "convert", str(src), "-o", str(tmp_path / "a.parquet")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("kvsim-trace: warning: ") and "line 3" in done.stderr
    assert done.stderr.count("\n") == 1 and ".py:" not in done.stderr


def test_a_git_lfs_pointer_an_empty_file_and_a_trace_of_no_requests_are_named_as_such(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pointer = tmp_path / "qwen_trace.jsonl"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 123456789\n")
    for fmt in ("auto", "bailian", "mooncake"):
        assert main(["stats", str(pointer), "--format", fmt]) == 2
        err = capsys.readouterr().err
        assert "is a Git LFS pointer, not the trace" in err and "git lfs pull" in err, fmt
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert main(["stats", str(empty)]) == 2
    assert capsys.readouterr().err.strip().endswith("empty.jsonl: is empty")
    header_only = tmp_path / "azure.csv"
    header_only.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n")
    out = tmp_path / "azure.parquet"
    assert main(["convert", str(header_only), "-o", str(out)]) == 2
    assert capsys.readouterr().err.strip().endswith("azure.csv: holds no requests")
    assert not out.exists()
    unknown = tmp_path / "odd.txt"
    unknown.write_text("hello\n")
    assert main(["stats", str(unknown)]) == 2
    assert "name it (kvsim-trace --format, kvsim trace.format=)" in capsys.readouterr().err


def test_stats_and_convert_infer_sessions_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"timestamp": i, "input_length": 600 * (i + 1), "output_length": 1, "hash_ids": list(range(i + 2))}
            for i in range(3)] + [{"timestamp": 9, "input_length": 600, "output_length": 1, "hash_ids": [0, 99]}]  # fmt: skip
    src = tmp_path / "m.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["stats", str(src), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sessions"] == 0
    assert main(["stats", str(src), "--json", "--infer-sessions"]) == 0
    assert json.loads(capsys.readouterr().out)["sessions"] == 2  # three turns of one, then another
    out = tmp_path / "m.parquet"
    assert main(["convert", str(src), "--infer-sessions", "-o", str(out)]) == 0
    assert read_trace(out).turn.tolist() == [1, 2, 3, 1]
