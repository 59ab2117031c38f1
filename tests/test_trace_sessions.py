"""Sessions recovered from prefix chains (``traces.sessions``) for traces that record none."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from traces import Trace, open_trace
from traces.sessions import infer_sessions

MOONCAKE = Path(__file__).resolve().parents[1] / ".." / "shared" / "traces" / "mooncake_conversation_trace.jsonl"


def chains(*requests: list[int]) -> Trace:
    return Trace.from_columns(
        arrival_s=np.arange(len(requests), dtype=float),
        input_tokens=[16 * len(r) for r in requests],
        output_tokens=[1] * len(requests),
        block_hashes=list(requests),
        block_size=16,
    )


def test_a_turn_continues_the_request_whose_whole_chain_but_its_last_block_it_holds() -> None:
    trace = infer_sessions(
        chains(
            [0, 1, 2, 3],  # a conversation opens (its last block partial)
            [0, 10, 11],  # another, on the same system prompt
            [0, 1, 2, 30, 4],  # the first one's next turn: its full blocks, then more
            [0, 10, 11, 12],  # the second one's next turn
            [0, 1, 20],  # shares two blocks with the first conversation, not its history: new
            [0, 1, 2, 30, 4, 5],  # the first one's third turn
        )
    )
    assert trace.session_id.tolist() == [0, 1, 0, 1, 4, 0]
    assert trace.turn.tolist() == [1, 1, 2, 2, 1, 3]


def test_a_trace_with_recorded_sessions_is_refused() -> None:
    recorded = Trace.from_columns(
        arrival_s=[0.0], input_tokens=[16], output_tokens=[1], block_hashes=[[1]], block_size=16, session_id=[5]
    )
    with pytest.raises(ValueError, match="already has sessions"):
        infer_sessions(recorded)


@pytest.mark.skipif(not MOONCAKE.exists(), reason="needs ../shared/traces (kvcache-ai/Mooncake FAST25-release)")
def test_on_the_mooncake_slice_every_inferred_turn_resends_an_earlier_turn_of_its_session() -> None:
    trace = infer_sessions(open_trace(MOONCAKE))
    later = np.flatnonzero(trace.turn > 1)
    assert 0.2 < len(later) / len(trace) < 0.5  # a third of the requests continue a conversation
    for r in later[::37].tolist():
        chain = trace.hashes_of(r).tolist()
        earlier = [
            p for p in range(r) if trace.session_id[p] == trace.session_id[r] and trace.turn[p] == trace.turn[r] - 1
        ]
        assert any(chain[: len(trace.hashes_of(p)) - 1] == trace.hashes_of(p).tolist()[:-1] for p in earlier), r
    first = np.flatnonzero(trace.turn == 1)
    assert (trace.session_id[first] == first).all()  # a session is named by its first request
