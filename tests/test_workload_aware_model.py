"""The reuse model of the workload-aware policy: life table, hazards and index, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from policies.eviction._workload_model import (
    BUCKET_EDGES,
    HORIZON_EPOCHS,
    N_BUCKETS,
    RING_EPOCHS,
    ReuseModel,
    bucket_of_age,
    gittins_index,
    hazards,
    index_by_age,
)


def padded(row: list[float]) -> np.ndarray:
    """A one-class hazard table: ``row`` then zeros up to the number of buckets."""
    return np.array([row + [0.0] * (N_BUCKETS - len(row))])


def test_buckets_cover_every_age_up_to_the_horizon_in_order() -> None:
    buckets = bucket_of_age()
    assert len(buckets) == HORIZON_EPOCHS + 1
    assert buckets[:5] == [0, 1, 2, 3, 4] and buckets[5] == 4  # ages 4 and 5 share [4, 6)
    assert buckets[-2] == N_BUCKETS - 1 and buckets[-1] == N_BUCKETS  # last: past the horizon
    assert buckets == sorted(buckets)
    assert BUCKET_EDGES[-1] == HORIZON_EPOCHS


def test_hazard_is_shrunk_toward_the_pooled_hazard_by_the_prior_lives() -> None:
    # Class 0: 3 reuses of 4 lives at risk; class 1: 1 of 12. Pooled: 4 of 16 = 0.25. With 4
    # prior lives: class 0 (3 + 4 * 0.25) / (4 + 4) = 0.5, class 1 (1 + 1) / 16 = 0.125; a class
    # with no lives at all gets the pooled hazard.
    reuses = np.array([[3.0], [1.0], [0.0]])
    at_risk = np.array([[4.0], [12.0], [0.0]])
    assert hazards(reuses, at_risk, 4.0)[:, 0] == pytest.approx([0.5, 0.125, 0.25])
    assert hazards(reuses, at_risk, 0.0)[:, 0] == pytest.approx([0.75, 1 / 12, 0.25])


def test_index_of_a_block_reused_in_its_first_epoch() -> None:
    # Reused for sure within the first epoch: on average it occupies half an epoch for one hit.
    index = gittins_index(padded([1.0]))
    assert index[0, 0] == pytest.approx(2.0)
    assert index[0, 1:].tolist() == [0.0] * N_BUCKETS  # never alive there


def test_index_rises_while_a_block_approaches_its_usual_reuse_time() -> None:
    # Never reused in the first epoch, surely in the second (a think time): from age 0 the best
    # holding horizon pays 1 hit for 1 + 1/2 epochs; from age 1, 1 hit for 1/2 epoch.
    index = gittins_index(padded([0.0, 1.0]))
    assert index[0, 0] == pytest.approx(2 / 3)
    assert index[0, 1] == pytest.approx(2.0)


def test_index_takes_the_best_holding_horizon() -> None:
    # Hazard 1/2 in bucket 0 and 1 in bucket 1: holding through bucket 0 alone gives 0.5 hits
    # for 0.75 epochs (2/3); through bucket 1 too gives 1 hit for 0.75 + 0.25 = 1 epoch (1.0).
    index = gittins_index(padded([0.5, 1.0]))
    assert index[0, 0] == pytest.approx(1.0)


def test_index_past_the_horizon_is_zero_and_interpolates_inside_wide_buckets() -> None:
    table = index_by_age(np.array([[8.0, 4.0, 2.0, 1.0, 0.5, 0.25] + [0.0] * (N_BUCKETS - 5)]))[0]
    assert table[3] == 1.0  # start of bucket [3, 4)
    assert table[4] == 0.5  # start of bucket [4, 6)
    assert table[5] == pytest.approx(0.375)  # halfway to the next bucket's 0.25
    assert table[HORIZON_EPOCHS] == 0.0
    assert len(table) == HORIZON_EPOCHS + 1


def events(starts: list[int], ends: list[int] = (), reuses: list[int] = ()) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(list(codes), dtype=np.int64) for codes in (starts, ends, reuses))


def test_life_table_counts_reuses_and_half_of_the_lives_in_progress() -> None:
    # Two lives of class 0 start in epoch 0; one is reused at age 2 (bucket [2, 3)); the other
    # is still going at epoch 5, age 5, in bucket [4, 6). Lives reaching buckets 0-2: both;
    # 3-4: the ongoing one, which counts half in its own bucket 4; later buckets: none.
    model = ReuseModel(2, prior_lives=0.0, half_life_epochs=1e9)
    model.add(*events([0 * RING_EPOCHS + 0, 0 * RING_EPOCHS + 0], [0], [0 * N_BUCKETS + 2]))
    model.refresh(5)
    reused, at_risk = model.life_table(5)
    assert reused[0].tolist() == [0, 0, 1] + [0] * (N_BUCKETS - 3)
    assert at_risk[0].tolist() == [2, 2, 2, 1, 0.5] + [0] * (N_BUCKETS - 5)
    assert at_risk[1].tolist() == [0] * N_BUCKETS


def test_a_life_unreused_for_a_horizon_expires_and_finished_lives_fade() -> None:
    # One life of class 0 starts in epoch 3 and is never reused: at epoch 3 + horizon it has
    # reached every bucket without a reuse. Ten epochs later (one half-life) it counts half.
    model = ReuseModel(1, prior_lives=0.0, half_life_epochs=10.0)
    model.add(*events([3]))
    model.refresh(HORIZON_EPOCHS)  # age horizon - 3: still going
    assert model.life_table(HORIZON_EPOCHS)[1][0, 0] == 1.0
    model.refresh(HORIZON_EPOCHS + 3)
    assert model.life_table(HORIZON_EPOCHS + 3)[1][0].tolist() == [1.0] * N_BUCKETS
    model.refresh(HORIZON_EPOCHS + 13)
    assert model.life_table(HORIZON_EPOCHS + 13)[1][0] == pytest.approx([0.5] * N_BUCKETS)


def test_a_slot_reused_by_a_later_epoch_keeps_the_lives_apart() -> None:
    # Lives are filed by start epoch modulo the ring. A life started in epoch 1 expires at
    # 1 + horizon; one started in epoch 1 + ring (same slot) later is a new, ongoing life.
    model = ReuseModel(1, prior_lives=0.0, half_life_epochs=1e9)
    model.add(*events([1]))
    model.refresh(HORIZON_EPOCHS)
    model.refresh(2 * HORIZON_EPOCHS)  # expired in between, at 1 + horizon
    model.add(*events([(1 + RING_EPOCHS) % RING_EPOCHS]))
    model.refresh(RING_EPOCHS + 2)  # the new life is 1 epoch old
    # bucket 0: both lives reached it; bucket 1: the expired one, and half of the new one,
    # which is in it now; bucket 2 on: the expired one alone.
    at_risk = model.life_table(RING_EPOCHS + 2)[1][0]
    assert at_risk[:3] == pytest.approx([2.0, 1.5, 1.0])


def test_refresh_refuses_to_skip_a_horizon() -> None:
    model = ReuseModel(1, prior_lives=0.0, half_life_epochs=1e9)
    with pytest.raises(RuntimeError, match="once a horizon"):
        model.refresh(HORIZON_EPOCHS + 1)
