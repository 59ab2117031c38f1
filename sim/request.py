"""The simulator's view of one request while it is alive.

A :class:`Request` is created when its trace row arrives and dropped when it finishes; its
measurements are copied into flat arrays (:class:`~sim.metrics.RequestLog`) so that a
million-request run does not keep a million objects.

KV accounting: the request's prompt is covered by its *named* prefix blocks (the engine
blocks derived from the trace's hash chain; named block ``j`` holds tokens
``[j*B, min((j+1)*B, input_tokens))``), and everything past them — an unhashed prompt tail
and generated tokens — lives in *private* blocks of ``B`` tokens that no other request can
reuse. ``held_named`` named blocks (always a prefix of the chain) are pinned in HBM;
``held_private`` private blocks are reserved there.
"""

from __future__ import annotations

from enum import IntEnum


class State(IntEnum):
    WAITING = 0  # in a replica's queue (new, or preempted)
    LOADING = 1  # admitted; waiting for KV copies (loads, swap-in, write-back of its slots)
    PREFILL = 2
    DECODE = 3
    DONE = 4
    REJECTED = 5


class Request:
    __slots__ = (
        "access_offset",
        "admitted_s",
        "arrival_s",
        "block_tokens",
        "blocks",
        "cached_tokens",
        "category",
        "computed",
        "decode_epoch",
        "decode_join_counter",
        "decode_join_generated",
        "first_scheduled_s",
        "first_token_s",
        "generated",
        "held_named",
        "held_private",
        "index",
        "input_tokens",
        "load_started_s",
        "looked_up",
        "named_tokens",
        "output_tokens",
        "preemptions",
        "priority",
        "prompt_target",
        "replica",
        "session_id",
        "stall_s",
        "state",
        "swapped_blocks",
        "turn",
    )

    def __init__(
        self,
        index: int,
        arrival_s: float,
        input_tokens: int,
        output_tokens: int,
        blocks: list[int],
        block_tokens: int,
        access_offset: int,
        session_id: int,
        turn: int,
        category: int,
    ) -> None:
        self.index = index
        self.arrival_s = arrival_s
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.blocks = blocks
        self.block_tokens = block_tokens
        self.access_offset = access_offset
        self.session_id = session_id
        self.turn = turn
        self.category = category
        self.priority = 0
        self.named_tokens = min(len(blocks) * block_tokens, input_tokens)
        self.replica = -1
        self.state = State.WAITING
        self.cached_tokens = 0  # prompt tokens found in HBM at the last lookup (schedulers read it)
        self.admitted_s = -1.0
        self.first_scheduled_s = -1.0
        self.first_token_s = -1.0
        self.load_started_s = -1.0
        self.stall_s = 0.0
        self.looked_up = False  # hit accounting happens at the first lookup only
        self.prompt_target = input_tokens  # tokens to prefill (prompt + regenerated output after recompute)
        self.computed = 0  # tokens of prompt_target whose KV exists
        self.generated = 0  # output tokens emitted so far
        self.held_named = 0
        self.held_private = 0
        self.swapped_blocks = 0  # blocks of this request's KV parked in DRAM by a swap
        self.preemptions = 0
        self.decode_epoch = 0
        self.decode_join_counter = 0
        self.decode_join_generated = 0

    def block_token_count(self, j: int) -> int:
        """Tokens held by named block ``j`` (the last one may be partial)."""
        return min(self.block_tokens, self.input_tokens - j * self.block_tokens)

    def tokens_in_first(self, m: int) -> int:
        """Tokens held by named blocks ``0..m-1`` (all full but possibly the prompt's last)."""
        return min(m * self.block_tokens, self.input_tokens)

    def kv_blocks_for(self, tokens: int) -> int:
        """HBM blocks needed to hold the KV of the first ``tokens`` tokens."""
        bt = self.block_tokens
        named = min(len(self.blocks), -(-tokens // bt))
        private = -(-max(0, tokens - self.named_tokens) // bt)
        return named + private

    def complete_named(self, tokens: int) -> int:
        """Named blocks whose every token is among the first ``tokens`` computed."""
        if tokens >= self.named_tokens:
            return len(self.blocks)
        return min(len(self.blocks), tokens // self.block_tokens)

    def remaining_work_tokens(self) -> int:
        """Prefill still to do plus output still to generate (what routers balance)."""
        return (self.prompt_target - self.computed) + (self.output_tokens - self.generated)
