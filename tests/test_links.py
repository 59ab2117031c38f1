"""Links serve transfers first come, first served, and account every byte."""

import pytest
import simpy

from sim.links import Link, linear_duration


def test_fifo_transfers_queue_behind_each_other_and_account_bytes() -> None:
    env = simpy.Environment()
    link = Link(env, "pcie_h2d", linear_duration(1e-3, 1e9), bucket_s=1.0)
    first = link.reserve(1_000_000, 2)  # 2 x 1 ms + 1 ms
    second = link.reserve(2_000_000, 1)  # waits for the first: 1 ms + 2 ms more
    assert first == pytest.approx(0.003)
    assert second == pytest.approx(0.006)
    assert link.bytes_moved == 3_000_000
    assert link.copies == 3
    assert link.busy_s == pytest.approx(0.006)


def test_busy_time_is_split_across_time_buckets() -> None:
    env = simpy.Environment()
    link = Link(env, "ssd_read", linear_duration(0.0, 1.0), bucket_s=1.0)
    link.reserve(2.5, 1)  # busy from 0 to 2.5 s
    assert [link.utilisation(b) for b in range(4)] == pytest.approx([1.0, 1.0, 0.5, 0.0])


def test_transfer_event_fires_at_completion() -> None:
    env = simpy.Environment()
    link = Link(env, "pcie_d2h", linear_duration(0.0, 100.0), bucket_s=1.0)
    seen = []

    def proc():
        yield link.transfer(50, 1)
        seen.append(env.now)

    env.process(proc())
    env.run()
    assert seen == [pytest.approx(0.5)]
