"""Every reader on small files written here, on the real Mooncake slice when present, and
every class of bad input with the message it must give."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from traces import TraceFormatError, open_trace, read_trace, write_trace
from traces.readers import READERS, detect_format
from traces.schema import Trace

MOONCAKE = Path(__file__).resolve().parents[1] / ".." / "shared" / "traces" / "mooncake_conversation_trace.jsonl"


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def mooncake_rows() -> list[dict]:
    return [
        {"timestamp": 1_700_000_001_000, "input_length": 1100, "output_length": 20, "hash_ids": [1, 2, 3]},
        {"timestamp": 1_700_000_001_500, "input_length": 1500, "output_length": 0, "hash_ids": [1, 2, 4]},
        {"timestamp": 1_700_000_004_053, "input_length": 300, "output_length": 7, "hash_ids": [9]},
    ]


def test_mooncake_reader_rebases_ms_timestamps_and_keeps_prefix_ids(tmp_path: Path) -> None:
    trace = open_trace(jsonl(tmp_path / "m.jsonl", mooncake_rows()), "mooncake")
    assert trace.block_size == 512
    assert trace.arrival_s.tolist() == [0.0, 0.5, 3.053]  # rebased in ms: exact, not 3.0529999732971191
    assert trace.input_tokens.tolist() == [1100, 1500, 300]
    assert trace.output_tokens.tolist() == [20, 0, 7]
    assert trace.hashes_of(0).tolist() == [1, 2, 3] and trace.hashes_of(1).tolist() == [1, 2, 4]
    assert (trace.session_id == -1).all()


def test_bailian_reader_recovers_sessions_from_the_parent_chain(tmp_path: Path) -> None:
    rows = [
        {"chat_id": 10, "parent_chat_id": -1, "timestamp": 0.0, "input_length": 40, "output_length": 5,
         "type": "text", "turn": 1, "hash_ids": [1, 2]},
        {"chat_id": 11, "parent_chat_id": -1, "timestamp": 1.0, "input_length": 20, "output_length": 5,
         "type": "image", "turn": 1, "hash_ids": [7]},
        {"chat_id": 12, "parent_chat_id": 10, "timestamp": 2.0, "input_length": 70, "output_length": 5,
         "type": "text", "turn": 2, "hash_ids": [1, 2, 3, 4]},
        {"chat_id": 13, "parent_chat_id": 12, "timestamp": 3.0, "input_length": 90, "output_length": 5,
         "type": "text", "turn": 3, "hash_ids": [1, 2, 3, 4, 5]},
        {"chat_id": 14, "parent_chat_id": 99, "timestamp": 4.0, "input_length": 16, "output_length": 1,
         "type": "search", "turn": 4, "hash_ids": [8]},
    ]  # fmt: skip
    trace = open_trace(jsonl(tmp_path / "b.jsonl", rows))  # auto-detected
    assert trace.block_size == 16
    assert trace.session_id.tolist() == [10, 11, 10, 10, 99]
    assert trace.turn.tolist() == [1, 1, 2, 3, 4]
    assert [trace.category_of(i) for i in range(5)] == ["text", "image", "text", "text", "search"]


def test_a_bailian_request_naming_itself_or_a_later_one_as_parent_starts_its_own_session(tmp_path: Path) -> None:
    """The file is in time order and a turn follows its parent's reply: a parent at or after
    the request is a broken link, not a conversation, and must not merge two sessions."""
    from traces.readers import bailian

    def row(chat: int, parent: int, t: float) -> dict:
        return {"chat_id": chat, "parent_chat_id": parent, "timestamp": t, "input_length": 16,
                "output_length": 1, "type": "text", "turn": 1, "hash_ids": [chat]}  # fmt: skip

    path = jsonl(tmp_path / "b.jsonl", [row(1, 3, 0.0), row(2, 2, 1.0), row(3, -1, 2.0), row(4, 3, 3.0)])
    for read in (bailian._read_regular, bailian._read_rows):
        with pytest.warns(UserWarning, match=r"2 request\(s\) name themselves or a later request.*chat_id 1"):
            trace = read(path, 16)
        assert trace.session_id.tolist() == [1, 2, 3, 3]


def test_azure_and_burstgpt_readers_give_lengths_without_hashes(tmp_path: Path) -> None:
    azure = tmp_path / "azure.csv"
    azure.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.1805900,396,109\n"
    )
    trace = open_trace(azure)
    np.testing.assert_allclose(trace.arrival_s, [0.0, 3.5])
    assert trace.input_tokens.tolist() == [374, 396] and trace.n_block_accesses == 0
    burst = tmp_path / "burst.csv"
    burst.write_text(
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "5,ChatGPT,472,18,490,Conversation log\n"
        "7,GPT-4,0,0,0,API log\n"
        "9,GPT-4,1200,0,1200,API log\n"
    )
    with pytest.warns(UserWarning, match="skipped 1 row.*line 3"):
        trace = open_trace(burst, "burstgpt")
    assert trace.input_tokens.tolist() == [472, 1200] and trace.output_tokens.tolist() == [18, 0]
    assert trace.category_of(0) == "ChatGPT/Conversation log"


def test_canonical_csv_and_parquet_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "c.csv"
    src.write_text(
        "request_id,arrival_s,input_tokens,output_tokens,block_hashes,session_id,turn,category\n"
        "5,0.0,40,3,11 12,1,1,chat\n"
        "6,0.5,70,4,11 12 13 14,1,2,chat\n"
        "7,0.7,10,4,,,,\n"
    )
    trace = open_trace(src, block_size=16)
    assert trace.request_id.tolist() == [5, 6, 7]
    assert trace.hashes_of(1).tolist() == [11, 12, 13, 14]
    assert trace.session_id.tolist() == [1, 1, -1] and trace.category_of(2) is None
    back = read_trace(write_trace(trace, tmp_path / "c.parquet"))
    assert detect_format(tmp_path / "c.parquet") == "parquet"
    for column in ("request_id", "arrival_s", "input_tokens", "output_tokens", "block_offsets", "block_hashes"):
        np.testing.assert_array_equal(getattr(back, column), getattr(trace, column))
    assert back.block_size == 16 and back.categories == trace.categories


def test_more_categories_than_a_16_bit_code_holds_round_trip(tmp_path: Path) -> None:
    """A file's categories are any strings (Bailian's ``type``, BurstGPT's model and log type):
    codes were int16, and the 32,768th distinct one raised NumPy's OverflowError."""
    n = 40_000
    labels = [f"c{i:05d}" for i in range(n)]
    trace = Trace.from_columns(
        arrival_s=np.arange(n, dtype=np.float64),
        input_tokens=np.full(n, 9),
        output_tokens=np.ones(n, dtype=np.int64),
        categories=[*labels[:-1], None],
        block_size=16,
    )
    assert trace.category_code.dtype == np.int32
    assert len(trace.categories) == n - 1 and trace.category_of(n - 2) == "c39998" and trace.category_of(n - 1) is None
    back = read_trace(write_trace(trace, tmp_path / "many.parquet"))
    np.testing.assert_array_equal(back.category_code, trace.category_code)
    assert back.categories == trace.categories


@pytest.mark.skipif(not MOONCAKE.exists(), reason="../shared/traces/ not present")
def test_real_mooncake_slice_matches_its_published_means() -> None:
    trace = open_trace(MOONCAKE, "mooncake")
    assert len(trace) == 12_031
    assert abs(trace.input_tokens.mean() - 12_035) < 1
    assert abs(trace.output_tokens.mean() - 343) < 1
    assert trace.n_block_accesses == 288_500
    assert len(np.unique(trace.block_hashes)) == 182_790


def test_gzip_bom_and_leading_blank_lines_read_as_the_plain_file(tmp_path: Path) -> None:
    plain = jsonl(tmp_path / "m.jsonl", mooncake_rows())
    expected = open_trace(plain)
    variants = {
        "m.jsonl.gz": gzip.compress(plain.read_bytes()),
        "bom.jsonl": b"\xef\xbb\xbf" + plain.read_bytes(),  # as spreadsheet exports write it
        "blank.jsonl": b"\n\r\n" + plain.read_bytes(),
    }
    for name, data in variants.items():
        (tmp_path / name).write_bytes(data)
        assert detect_format(tmp_path / name) == "mooncake", name
        got = open_trace(tmp_path / name)
        for column in ("arrival_s", "input_tokens", "block_offsets", "block_hashes"):
            np.testing.assert_array_equal(getattr(got, column), getattr(expected, column), err_msg=name)
    azure = tmp_path / "azure.csv.gz"
    azure.write_bytes(
        gzip.compress(b'\xef\xbb\xbf"TIMESTAMP","ContextTokens","GeneratedTokens"\r\n2023-11-16 18:15:46,374,44\r\n')
    )
    assert detect_format(azure) == "azure" and open_trace(azure).input_tokens.tolist() == [374]
    (tmp_path / "damaged.jsonl.gz").write_bytes(gzip.compress(plain.read_bytes())[:-12])
    with pytest.raises(TraceFormatError, match="damaged gzip"):
        open_trace(tmp_path / "damaged.jsonl.gz", "mooncake")
    parquet = write_trace(expected, tmp_path / "m.parquet").rename(tmp_path / "m.bin")
    assert detect_format(parquet) == "parquet"  # by its magic bytes, whatever the name


@pytest.mark.parametrize("fmt", ["auto", "mooncake", "bailian", "azure", "burstgpt", "csv"])
@pytest.mark.parametrize("damage", ["header only", "cut in the header", "corrupt stream"])
def test_a_damaged_gzip_file_is_a_format_error_naming_it(tmp_path: Path, fmt: str, damage: str) -> None:
    whole = gzip.compress(b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,374,44\n" * 50)
    data = {
        "header only": whole[:2],  # the magic bytes and nothing else
        "cut in the header": whole[:7],
        "corrupt stream": whole[:10] + bytes(b ^ 0x5A for b in whole[10:30]) + whole[30:],
    }[damage]
    path = tmp_path / "trace.gz"
    path.write_bytes(data)
    with pytest.raises(TraceFormatError, match="damaged gzip") as caught:
        open_trace(path, fmt, block_size=16 if fmt == "csv" else None)
    assert str(path) in str(caught.value)


def test_azure_timestamps_with_utc_offsets_rebase_exactly(tmp_path: Path) -> None:
    azure = tmp_path / "azure.csv"
    azure.write_text(
        "TIMESTAMP,NumImages,ContextTokens,GeneratedTokens\n"
        "2024-05-10 00:00:00+00:00,0,2162,5\n"  # 2024's form
        "2024-05-10 00:00:00.052+00:00,0,2399,6\n"
        "2024-05-10T00:00:01.5Z,1,949,126\n"  # 2025's form
        "2024-05-09 23:00:02-01:00,0,100,3\n"  # an hour west: 00:00:02 UTC
        "2024-05-10 00:00:03,0,0,0\n"  # no prompt: skipped
    )
    with pytest.warns(UserWarning, match="skipped 1 row.*0 ContextTokens.*line 6"):
        trace = open_trace(azure)
    assert trace.arrival_s.tolist() == [0.0, 0.052, 1.5, 2.0]  # exact: rebased in integer ns
    assert trace.input_tokens.tolist() == [2162, 2399, 949, 100]
    azure.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:05+00:00,9,1\n2024-05-10 01:00:01+01:00,9,1\n"
    )
    with pytest.raises(
        TraceFormatError, match=r"line 3: field 'TIMESTAMP': goes backwards \(2024-05-10 01:00:01\+01:00 after"
    ):
        open_trace(azure)


@pytest.mark.parametrize("stamp", ["3023-11-16 18:15:48", "2262-04-12 00:00:00.5+00:00", "1600-01-01 00:00:00"])
def test_an_azure_timestamp_past_nanosecond_range_is_out_of_range_not_backwards(tmp_path: Path, stamp: str) -> None:
    """A typo's year 3023 wrapped round in NumPy's nanoseconds to 1854 and was reported as
    going backwards; 1600 wrapped forward to 2184 and was read without a word."""
    azure = tmp_path / "azure.csv"
    azure.write_text(f"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,374,4\n{stamp},374,4\n")
    with pytest.raises(TraceFormatError) as err:
        open_trace(azure)
    assert str(err.value) == (
        f"{azure}: line 3: field 'TIMESTAMP': is out of range (got {stamp!r}; dates must fall between 1677 and 2262)"
    )


def test_a_regular_azure_file_is_read_whole_and_equals_the_row_by_row_reading(tmp_path: Path) -> None:
    from traces.readers.csv_formats import _azure_columns, _read_azure_rows

    rng = np.random.default_rng(3)
    start = np.datetime64("2024-05-10T00:00:00", "us")
    stamps = start + np.cumsum(rng.integers(0, 5_000_000, 500)).astype("timedelta64[us]")
    rows = [f"{str(t).replace('T', ' ')}+00:00,{rng.integers(1, 9000)},{rng.integers(0, 900)}" for t in stamps]
    azure = tmp_path / "azure.csv.gz"
    azure.write_bytes(gzip.compress(("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(rows) + "\n").encode()))
    assert _azure_columns(azure) is not None  # regular: read whole
    whole, by_row = open_trace(azure), _read_azure_rows(azure)
    for column in ("arrival_s", "input_tokens", "output_tokens", "block_offsets"):
        assert getattr(whole, column).tobytes() == getattr(by_row, column).tobytes(), column
    azure.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:05,9,1\n,9,1\n")
    with pytest.raises(TraceFormatError, match="line 3: field 'TIMESTAMP': is empty"):
        open_trace(azure)  # irregular: the row reader names the place


TRACE_COLUMNS = (
    "arrival_s", "input_tokens", "output_tokens", "block_offsets", "block_hashes", "session_id", "turn",
    "category_code",
)  # fmt: skip


def assert_same_trace(a: Trace, b: Trace) -> None:
    for column in TRACE_COLUMNS:
        assert getattr(a, column).dtype == getattr(b, column).dtype, column
        assert getattr(a, column).tobytes() == getattr(b, column).tobytes(), column
    assert a.categories == b.categories and a.block_size == b.block_size


def bailian_rows(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows, t = [], 0.0
    for i in range(n):
        t += float(rng.exponential(0.5))
        parent = int(rng.integers(0, i)) if i and rng.random() < 0.6 else -1
        n_in = int(rng.integers(1, 400))
        rows.append(
            {
                "chat_id": i, "parent_chat_id": parent, "timestamp": round(t, 3), "input_length": n_in,
                "output_length": int(rng.integers(0, 50)), "type": str(rng.choice(["text", "image", "search"])),
                "turn": int(rng.integers(1, 6)), "hash_ids": rng.integers(0, 1 << 63, -(-n_in // 16)).tolist(),
                "extra": {"ignored": True},
            }
        )  # fmt: skip
    return rows


def test_a_regular_json_lines_file_is_read_whole_and_equals_the_row_by_row_reading(tmp_path: Path) -> None:
    from traces.readers import bailian, mooncake

    cases = [(mooncake, jsonl(tmp_path / "m.jsonl", mooncake_rows()), 512)]
    cases.append((bailian, jsonl(tmp_path / "b.jsonl", bailian_rows(300, 1)), 16))
    gz = tmp_path / "b.jsonl.gz"
    gz.write_bytes(gzip.compress(b"\xef\xbb\xbf\n" + cases[1][1].read_bytes()))  # gzip, a BOM, a blank line
    cases.append((bailian, gz, 16))
    if MOONCAKE.exists():
        cases.append((mooncake, MOONCAKE, 512))
    for reader, path, block in cases:
        whole = reader._read_regular(path, block)
        assert whole is not None, path  # regular: read whole
        assert_same_trace(whole, reader._read_rows(path, block))


@pytest.mark.parametrize(
    "fmt, change, error",
    [
        ("mooncake", lambda r: r.update(input_length=1500.0), None),  # a whole float: the rows accept it
        ("mooncake", lambda r: r.update(timestamp=float("nan")), "line 2: field 'timestamp': is not finite"),
        ("mooncake", lambda r: r.update(hash_ids=[1, None]), "line 2: field 'hash_ids'"),
        ("mooncake", lambda r: r.update(timestamp=-5), "line 2: field 'timestamp': goes backwards"),
        ("mooncake", lambda r: r.pop("output_length"), "line 2: field 'output_length': is missing"),
        ("bailian", lambda r: r.update(parent_chat_id=None), None),  # null: no parent, as -1
        ("bailian", lambda r: r.pop("parent_chat_id"), "line 2: field 'parent_chat_id': is missing"),
        ("bailian", lambda r: r.update(chat_id=0), "line 2: field 'chat_id': 0 appears twice"),
        ("bailian", lambda r: r.update(type=""), "line 2: field 'type': must be a non-empty string"),
        ("bailian", lambda r: r.update(turn=-1), "line 2: field 'turn': must be >= 0"),
    ],
)
def test_a_json_lines_file_arrow_would_misread_goes_to_the_row_reader(tmp_path: Path, fmt, change, error) -> None:
    from traces.readers import bailian, mooncake

    reader = {"mooncake": mooncake, "bailian": bailian}[fmt]
    rows = mooncake_rows() if fmt == "mooncake" else bailian_rows(4, 2)
    change(rows[1])
    path = jsonl(tmp_path / "t.jsonl", rows)
    assert reader._read_regular(path, reader.BLOCK_SIZE) is None
    if error is None:
        assert_same_trace(open_trace(path, fmt), reader._read_rows(path, reader.BLOCK_SIZE))
    else:
        with pytest.raises(TraceFormatError, match=error):
            open_trace(path, fmt)


JSON_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**65), 2**65), st.floats(allow_nan=True), st.text(max_size=3),
    st.lists(st.one_of(st.none(), st.integers(-2, 2**64), st.floats(0, 5)), max_size=4),
)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(["mooncake", "bailian"]), row=st.integers(0, 3), field=st.integers(0, 7), value=JSON_VALUES)
def test_whatever_arrow_reads_whole_the_row_reader_reads_the_same(tmp_path: Path, fmt, row, field, value) -> None:
    from traces.readers import bailian, mooncake

    reader = {"mooncake": mooncake, "bailian": bailian}[fmt]
    rows = mooncake_rows() if fmt == "mooncake" else bailian_rows(4, 3)
    name = list(reader.FIELDS)[field % len(reader.FIELDS)]
    rows[row % len(rows)][name] = value
    path = jsonl(tmp_path / "t.jsonl", rows)
    whole = reader._read_regular(path, reader.BLOCK_SIZE)
    if whole is not None:
        assert_same_trace(whole, reader._read_rows(path, reader.BLOCK_SIZE))


def test_two_objects_on_one_line_are_refused_as_the_row_reader_refuses_them(tmp_path: Path) -> None:
    rows = [json.dumps(r) for r in mooncake_rows()]
    path = tmp_path / "m.jsonl"
    path.write_text(rows[0] + "\n" + rows[1] + " " + rows[2] + "\n")
    with pytest.raises(TraceFormatError, match="line 2: malformed JSON"):
        open_trace(path, "mooncake")


def test_burstgpt_session_ids_group_turns_in_arrival_order(tmp_path: Path) -> None:
    burst = tmp_path / "burst.csv"
    burst.write_text(
        "Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "10.0,1722ac82-0a46,43,GPT-4,906,446,1352,Conversation log\n"
        "11.0,,2,ChatGPT,36,29,65,API log\n"
        "12.0,d5983bf9-4b48,8,ChatGPT,100,20,120,Conversation log\n"
        "19.0,1722ac82-0a46,8,GPT-4,1779,123,1902,Conversation log\n"
    )
    trace = open_trace(burst)
    assert trace.session_id.tolist() == [0, -1, 1, 0]
    assert trace.turn.tolist() == [1, -1, 1, 2]


def test_a_block_size_that_does_not_fit_a_formats_hashes_is_refused(tmp_path: Path) -> None:
    rows = [
        {"timestamp": i, "input_length": 5000, "output_length": 1, "hash_ids": [1, *range(10 * i + 2, 10 * i + 11)]}
        for i in range(4)
    ]
    path = jsonl(tmp_path / "m.jsonl", rows)
    assert open_trace(path).block_size == 512
    with pytest.raises(TraceFormatError, match=r"field 'block_size': at 16 tokens per block .* median 3%.*512-token"):
        open_trace(path, block_size=16)  # 10 hashes of 16 tokens for a 5,000-token prompt
    with pytest.raises(TraceFormatError, match="allows at most 5"):
        open_trace(path, block_size=1024)


def test_a_block_size_that_is_no_block_size_is_refused_wherever_it_comes_in(tmp_path: Path) -> None:
    """0 was read as unset by every reader (``block_size or 16``) and a size past int64
    overflowed the block counts of Trace.validate, from an argument or a Parquet file's
    metadata alike."""
    src = tmp_path / "t.csv"
    src.write_text("arrival_s,input_tokens,output_tokens\n0.0,64,4\n")
    refused = "must be a whole number from 1 to 2,147,483,647"
    with pytest.raises(ValueError) as err:
        open_trace(src, block_size=0)
    assert str(err.value) == f"block_size {refused} (got 0)"
    with pytest.raises(TraceFormatError) as err:
        READERS["csv"](src, block_size=0)  # a reader called on its own: no default in 0's place
    assert str(err.value) == f"{src}: field 'block_size': {refused} (got 0)"
    with pytest.raises(TraceFormatError) as err:
        Trace.from_columns(arrival_s=[0.0], input_tokens=[64], output_tokens=[4], block_size=10**20, source="mem")
    assert str(err.value) == f"mem: field 'block_size': {refused} (got 100000000000000000000)"
    table = open_trace(src).to_arrow()
    for meta in (b"0", b"-16", b"99999999999999999999999"):
        path = tmp_path / f"meta{meta.decode()}.parquet"
        pq.write_table(table.replace_schema_metadata({b"kvsim.block_size": meta}), path)
        with pytest.raises(TraceFormatError) as err:
            open_trace(path)
        assert (
            str(err.value) == f"{path}: field 'block_size': metadata kvsim.block_size {refused} (got {meta.decode()})"
        )


def test_a_block_size_other_than_a_parquet_files_own_is_refused(tmp_path: Path) -> None:
    """A Mooncake file converted to Parquet keeps its 512-token blocks in the metadata; a
    block size given in its place was taken without a word (trace.block_size=16: a 3 % hit
    ratio for 89 %), where the same override of the .jsonl is refused."""
    source = jsonl(tmp_path / "m.jsonl", mooncake_rows())
    hashed = write_trace(open_trace(source), tmp_path / "m.parquet")
    with pytest.raises(TraceFormatError) as err:
        open_trace(hashed, block_size=16)
    assert str(err.value) == (
        f"{hashed}: field 'block_size': 16 given, but the file's hashes are over 512-token blocks (its "
        "kvsim.block_size metadata): leave the block size unset (trace.block_size, --block-size) to read them as written"
    )
    assert open_trace(hashed, block_size=512).block_size == 512
    lengths = tmp_path / "lengths.csv"
    lengths.write_text("arrival_s,input_tokens,output_tokens\n0.0,64,4\n")
    unhashed = write_trace(open_trace(lengths), tmp_path / "lengths.parquet")
    assert open_trace(unhashed, block_size=32).block_size == 32  # no hashes to misread


def test_a_negative_or_backward_arrival_names_its_line_or_row_and_a_plain_number(tmp_path: Path) -> None:
    """Checked only by Trace.validate, a negative arrival of a CSV on line 2 was "row 0", and
    values were NumPy reprs: "(got np.float64(-1.0))"."""
    src = tmp_path / "neg.csv"
    src.write_text("arrival_s,input_tokens,output_tokens\n-1,100,10\n0,100,10\n")
    with pytest.raises(TraceFormatError) as err:
        open_trace(src)
    assert str(err.value) == f"{src}: line 2: field 'arrival_s': is negative (got -1.0)"
    columns = dict(input_tokens=[9, 9], output_tokens=[1, 1], block_size=16, source="mem")
    with pytest.raises(TraceFormatError) as err:
        Trace.from_columns(arrival_s=[0.0, -2.5], **columns)
    assert str(err.value) == "mem: row 1: field 'arrival_s': is negative (got -2.5)"
    with pytest.raises(TraceFormatError) as err:
        Trace.from_columns(arrival_s=[5.0, 1.0], **columns)
    assert (
        str(err.value)
        == "mem: row 1: field 'arrival_s': goes backwards (1.0 after 5.0); arrivals must be non-decreasing"
    )


def test_parquet_counts_out_of_range_and_null_hashes_name_the_row(tmp_path: Path) -> None:
    meta = {b"kvsim.block_size": b"16"}
    big = pa.table(
        {"arrival_s": [0.0, 1.0], "input_tokens": pa.array([100, 2**32 + 100], pa.int64()), "output_tokens": [1, 1]},
        metadata=meta,
    )
    pq.write_table(big, tmp_path / "big.parquet")
    with pytest.raises(TraceFormatError, match=r"row 1: field 'input_tokens': 4294967396 does not fit"):
        open_trace(tmp_path / "big.parquet")  # a plain cast wraps it round to 100
    hashes = pa.array([[7], [1, 2], [3], [4, None]], pa.list_(pa.int64())).slice(1)  # a slice of a larger table
    holes = pa.table(
        {
            "arrival_s": [0.0, 1.0, 2.0],
            "input_tokens": [64, 64, 64],
            "output_tokens": [1, 1, 1],
            "block_hashes": hashes,
        },
        metadata=meta,
    )
    with pytest.raises(TraceFormatError, match=r"row 2: field 'block_hashes': holds a null hash"):
        Trace.from_arrow(holes, source="holes")  # in memory, the slice's values are not its parent's
    pq.write_table(holes, tmp_path / "holes.parquet")
    with pytest.raises(TraceFormatError, match=r"holes.parquet: row 2: field 'block_hashes': holds a null hash"):
        open_trace(tmp_path / "holes.parquet")


# ---------------------------------------------------------------------------- bad input
BAD_MOONCAKE = [
    ("not json at all\n", "line 1", "malformed JSON"),
    ('{"timestamp": 0, "output_length": 1, "hash_ids": []}\n', "field 'input_length'", "is missing"),
    ('{"timestamp": 0, "input_length": -3, "output_length": 1, "hash_ids": []}\n', "field 'input_length'", ">= 1"),
    ('{"timestamp": 0, "input_length": "many", "output_length": 1, "hash_ids": []}\n', "input_length", "not a number"),
    (
        '{"timestamp": 5, "input_length": 9, "output_length": 1, "hash_ids": [1]}\n'
        '{"timestamp": 4, "input_length": 9, "output_length": 1, "hash_ids": [1]}\n',
        "line 2: field 'timestamp'",
        "goes backwards (4.0 after 5.0)",  # in the file's own unit, milliseconds
    ),
    ('{"timestamp": 0, "input_length": 600, "output_length": 1, "hash_ids": [1, 2, 3]}\n', "field 'hash_ids'", "at most 2"),
    ('[1, 2, 3]\n', "line 1", "expected a JSON object"),
    ('{"timestamp": 0, "input_length": 600, "output_length": 1, "hash_ids": [1, 2\n', "line 1", "the line ends early"),
    ('{"timestamp": 0, "input_length": 99999999999999999999, "output_length": 1, "hash_ids": []}\n', "field 'input_length'", "must be <="),
]  # fmt: skip


@pytest.mark.parametrize(("text", "where", "problem"), BAD_MOONCAKE)
def test_bad_mooncake_input_names_file_line_and_field(tmp_path: Path, text: str, where: str, problem: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(TraceFormatError) as err:
        open_trace(path, "mooncake")
    message = str(err.value)
    assert str(path) in message and where in message and problem in message


def test_csv_quoting_is_parsed_as_csv_and_a_quote_never_closed_names_its_line_and_field(tmp_path: Path) -> None:
    """Split into lines before parsing, a quoted line break (valid CSV) was refused as "line 3:
    has 1 values" and a quote never closed was passed unseen, its field running to the end of
    the line."""
    header = "arrival_s,input_tokens,output_tokens,category\n"
    src = tmp_path / "t.csv"
    src.write_text(header + '0,100,10,"multi\nline, quoted"\n1,100,10,"say ""hi"""\n2,100,10,chat\n')
    trace = open_trace(src)
    assert [trace.category_of(i) for i in range(3)] == ["multi\nline, quoted", 'say "hi"', "chat"]
    src.write_text(header + '0,100,10,"multi\nline"\n1,-5,10,chat\n')
    with pytest.raises(TraceFormatError) as err:
        open_trace(src)  # the line in the file, past the record of two lines
    assert str(err.value) == f"{src}: line 4: field 'input_tokens': must be >= 1 (got -5)"
    src.write_text(header + '0,100,10,"a""b"\n1,100,10,"unterminated\n2,100,10,chat\n')
    with pytest.raises(TraceFormatError) as err:
        open_trace(src)
    assert str(err.value) == (
        f"{src}: line 3: field 'category': opens a quoted field that is never closed (a missing closing quote?)"
    )
    src.write_text(header + '0,100,10,"open\n' + "".join(f"{i},100,10,chat\n" for i in range(1, 8000)))
    with pytest.raises(TraceFormatError) as err:
        open_trace(src)  # past the csv module's default field limit, and still named
    assert str(err.value) == (
        f"{src}: line 2: field 'category': opens a quoted field that is never closed (a missing closing quote?)"
    )


def test_a_blank_line_inside_a_quoted_field_is_kept_and_one_between_records_skipped(tmp_path: Path) -> None:
    """RFC 4180 keeps every line break of a quoted field; blank lines were dropped before the CSV
    parser saw them, so "a<blank line>b" was read as "a\\nb"."""
    text = (
        "\narrival_s,input_tokens,output_tokens,category\n\n"
        '0,100,10,"first\n\n\nlast"\n  \n1,100,10,"x\n \ny"\n\n2,100,10,"crlf\r\n\r\nend"\n3,-1,10,chat\n'
    )
    src = tmp_path / "t.csv"
    src.write_bytes(text.encode())
    with pytest.raises(TraceFormatError) as err:
        open_trace(src)
    line = text.split("\n").index("3,-1,10,chat") + 1  # blank lines are still counted
    assert str(err.value) == f"{src}: line {line}: field 'input_tokens': must be >= 1 (got -1)"
    src.write_bytes(text.replace("3,-1,", "3,1,").encode())
    categories = [open_trace(src).category_of(i) for i in range(4)]
    assert categories == ["first\n\n\nlast", "x\n \ny", "crlf\r\n\r\nend", "chat"]


def test_a_hash_field_longer_than_the_csv_modules_default_limit_is_read(tmp_path: Path) -> None:
    """A long prompt's block_hashes (7,000 hashes of up to 20 digits, 112K tokens in 16-token
    blocks) failed with the csv module's "field larger than field limit (131072)"."""
    import csv

    hashes = [(1 << 63) + 7919 * i for i in range(7000)]
    field = " ".join(map(str, hashes))
    assert len(field) > 131_072
    src = tmp_path / "long.csv"
    src.write_text(f"arrival_s,input_tokens,output_tokens,block_hashes\n0,{16 * 7000},4,{field}\n1,32,4,{field[:40]}\n")
    before = csv.field_size_limit()
    trace = open_trace(src, block_size=16)
    assert trace.hashes_of(0).tolist() == hashes and len(trace) == 2
    assert csv.field_size_limit() >= before  # a limit raised by the caller is not lowered


def test_a_field_past_the_readers_limit_names_the_line_it_begins_on(tmp_path: Path, monkeypatch) -> None:
    """The limit is kept (lowered here to stay small) so that a quote never closed in a large
    file is named before the rest of the file is read into one field."""
    import csv

    import traces.readers.csv_formats as csv_formats

    monkeypatch.setattr(csv_formats, "CSV_FIELD_LIMIT", 1000)
    default = csv.field_size_limit(1000)
    try:
        src = tmp_path / "t.csv"
        src.write_text('arrival_s,input_tokens,output_tokens,category\n0,100,10,"open\n' + "1,100,10,chat\n" * 200)
        with pytest.raises(TraceFormatError) as err:
            open_trace(src)
    finally:
        csv.field_size_limit(default)
    past = 2 + -(-(1000 - len("open\n")) // len("1,100,10,chat\n"))  # the line that takes the field past 1,000
    assert str(err.value) == (
        f"{src}: line 2: malformed CSV (field larger than field limit (1000)); its record runs on to line {past} "
        "(a missing closing quote?)"
    )


def test_a_file_of_another_format_fails_on_its_header(tmp_path: Path) -> None:
    path = tmp_path / "azure.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,374,44\n")
    with pytest.raises(TraceFormatError, match=r"line 1: field 'Timestamp': column is missing.*BurstGPT columns"):
        open_trace(path, "burstgpt")
    with pytest.raises(TraceFormatError, match=r"line 1: malformed JSON.*Mooncake"):
        open_trace(path, "mooncake")


def test_missing_file_and_unknown_format_are_clear(tmp_path: Path) -> None:
    with pytest.raises(TraceFormatError, match="file not found"):
        open_trace(tmp_path / "nope.jsonl", "mooncake")
    with pytest.raises(TraceFormatError, match="unknown trace format 'kimi'.*mooncake"):
        open_trace(tmp_path / "x", "kimi")
    odd = tmp_path / "odd.txt"
    odd.write_text("hello\n")
    with pytest.raises(TraceFormatError, match="cannot tell the trace format"):
        open_trace(odd)


HUGE = "1" + "0" * 400  # 10**400: JSON reads it as an exact int, which no float can hold
HUGE_SHOWN = "10000000000000000000... (401 digits)"
OUT_OF_RANGE = [
    ("m.jsonl", "mooncake", f'{{"timestamp": 0, "input_length": {HUGE}, "output_length": 1, "hash_ids": []}}\n',
     f"line 1: field 'input_length': must be <= 2147483647 (got {HUGE_SHOWN})"),
    ("m.jsonl", "mooncake", f'{{"timestamp": {HUGE}, "input_length": 9, "output_length": 1, "hash_ids": []}}\n',
     f"line 1: field 'timestamp': is out of range (got {HUGE_SHOWN})"),
    ("m.jsonl", "mooncake", f'{{"timestamp": 0, "input_length": {"9" * 5000}, "output_length": 1, "hash_ids": []}}\n',
     "line 1: holds a number too long to read (thousands of digits)"),
    ("c.csv", "csv", f"arrival_s,input_tokens,output_tokens\n0,{HUGE},1\n",
     f"line 2: field 'input_tokens': must be <= 2147483647 (got {HUGE_SHOWN})"),
    ("c.csv", "csv", f"arrival_s,input_tokens,output_tokens\n0,{'9' * 5000},1\n",
     "line 2: field 'input_tokens': must be <= 2147483647 (got 99999999999999999999... (5,000 digits))"),
    ("c.csv", "csv", "arrival_s,input_tokens,output_tokens\n0,1e400,1\n",
     "line 2: field 'input_tokens': must be <= 2147483647 (got '1e400')"),
    ("c.csv", "csv", f"arrival_s,input_tokens,output_tokens\n{HUGE},9,1\n",
     f"line 2: field 'arrival_s': is out of range (got {HUGE_SHOWN})"),
    ("c.csv", "csv", "arrival_s,input_tokens,output_tokens\n0,9,1\n-inf,9,1\n",
     "line 3: field 'arrival_s': is not finite (got '-inf')"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "fmt", "text", "message"),
    OUT_OF_RANGE,
    ids=[
        "json-count",
        "json-time",
        "json-5000-digits",
        "csv-count",
        "csv-5000-digits",
        "csv-1e400",
        "csv-time",
        "csv-inf",
    ],
)
def test_a_number_too_large_for_a_float_is_out_of_range_naming_line_and_field(
    tmp_path: Path, name: str, fmt: str, text: str, message: str
) -> None:
    """Checked as a float, an integer of 400 digits overflowed (a traceback from JSON, "not a
    whole number (got inf)" from CSV)."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(TraceFormatError) as err:
        open_trace(path, fmt)
    assert str(err.value) == f"{path}: {message}"
