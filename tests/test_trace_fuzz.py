"""Readers survive random, truncated and mutated input: a TraceFormatError or a valid trace,
never another exception and never a hang."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from traces import TraceFormatError, open_trace
from traces.readers import FORMATS

VALID = {
    "mooncake": "".join(
        json.dumps({"timestamp": 100 * i, "input_length": 700 + i, "output_length": 5, "hash_ids": [1, 2 + i]}) + "\n"
        for i in range(4)
    ),
    "bailian": "".join(
        json.dumps(
            {
                "chat_id": i,
                "parent_chat_id": i - 1 if i else -1,
                "timestamp": i,
                "input_length": 40,
                "output_length": 3,
                "type": "text",
                "turn": i + 1,
                "hash_ids": [1, 2],
            }
        )
        + "\n"
        for i in range(4)
    ),  # fmt: skip
    "azure": "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.1,374,44\n2023-11-16 18:15:47.2,37,4\n",
    "burstgpt": "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n1,ChatGPT,47,18,65,API log\n",
    "csv": "arrival_s,input_tokens,output_tokens,block_hashes\n0,40,3,1 2\n1,50,3,1 2 3\n",
}
TEXT_FORMATS = [f for f in FORMATS if f != "parquet"]
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def read_or_reject(path: Path, fmt: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            trace = open_trace(path, fmt, block_size=16 if fmt == "csv" else None)
        except TraceFormatError as exc:
            assert str(path) in str(exc)
            return
    assert len(trace) >= 0


@FUZZ
@given(data=st.binary(max_size=400), fmt=st.sampled_from([*TEXT_FORMATS, "parquet", "auto"]))
@example(data=b"\r\x00", fmt="azure")  # a lone carriage return broke the CSV header parse
@example(data=b"\r\x00", fmt="auto")
def test_random_bytes(tmp_path: Path, data: bytes, fmt: str) -> None:
    path = tmp_path / "fuzz.bin"
    path.write_bytes(data)
    read_or_reject(path, fmt)


@FUZZ
@given(fmt=st.sampled_from(TEXT_FORMATS), cut=st.integers(min_value=0, max_value=400))
def test_truncated_valid_files(tmp_path: Path, fmt: str, cut: int) -> None:
    path = tmp_path / "cut.txt"
    path.write_text(VALID[fmt][:cut])
    read_or_reject(path, fmt)


@FUZZ
@given(
    fmt=st.sampled_from(TEXT_FORMATS),
    position=st.integers(min_value=0, max_value=400),
    junk=st.text(alphabet=st.sampled_from(list('0123456789-.,"{}[]:e ab\n')), min_size=1, max_size=6),
)
def test_mutated_valid_files(tmp_path: Path, fmt: str, position: int, junk: str) -> None:
    text = VALID[fmt]
    position %= len(text)
    path = tmp_path / "mutated.txt"
    path.write_text(text[:position] + junk + text[position + 1 :])
    read_or_reject(path, fmt)
