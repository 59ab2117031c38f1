"""The reuse model behind :mod:`policies.eviction.workload_aware`: learned hazards, one index.

Every touch of a block starts a *life* that ends at the block's next touch (a reuse) or, if
none comes within the horizon, expires. A life belongs to the *class* its block had when it
was touched (access count, chain position, turn, category: see the policy) and its *age* is
counted in epochs of the policy's clock. This module turns observed lives into a per-(class,
age) eviction index:

1. **Hazard by age bucket** (life-table / actuarial estimator). ``h[c, b]`` is the chance that a
   life of class ``c`` that reached age bucket ``b`` is reused within it: reuses in ``b`` over
   lives that reached ``b``, where lives still in progress count half in their current bucket
   (they are censored, not failed). Lives are observed whether or not the block stayed
   resident, so the estimate is not biased by the policy's own evictions; LHD's estimator, which
   sees only hits of resident blocks, would learn that a block it evicts young is never reused.
2. **Shrinkage**: a class with few lives borrows strength from the pooled hazard of all classes
   at the same age, with ``prior_lives`` pseudo-lives, so a rare class starts from the average
   behaviour instead of from noise.
3. **Index** (hits per unit of cache space, at the best holding horizon): for a block of class
   ``c`` at the start of bucket ``b``, ``I[c, b] = max over T >= b of  sum f[c, b..T] /
   sum occ[c, b..T]``, where ``f`` is the chance of a reuse in each bucket and ``occ`` the
   expected epochs the block occupies there if kept until reused or until ``T``. This is LHD's
   hit density with the holding horizon chosen at its best rather than taken from the policy's
   past evictions (a Gittins-style index). It ranks a just-inserted block of a class that is
   rarely reused below everything (admission filtering), a block whose reuse window has passed
   low (recency), and protects a block that approaches its class's usual reuse time (think time
   in a conversation), which recency alone evicts first.

Buckets widen with age (1, 1, 1, 1, 2, 2, 4, 4, 8, 8, 16, 16 epochs): young ages, where most
reuse happens, are resolved finely; the sparse old tail is pooled so that noise there does not
reorder blocks that recency would order correctly. The policy reads the index per epoch of
age (:meth:`ReuseModel.index_by_age`), interpolated linearly between bucket starts: within a
wide bucket, a block that has waited longer has a different outlook than one that just
entered it, and interpolation keeps their recency order.
"""

from __future__ import annotations

import numpy as np

#: Upper edges of the age buckets, in epochs; the last edge is the horizon.
BUCKET_EDGES: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
HORIZON_EPOCHS = BUCKET_EDGES[-1]
N_BUCKETS = len(BUCKET_EDGES)
#: Lives are filed by start epoch modulo this ring: two horizons, so that the model may be
#: folded as rarely as once a horizon and still tell expiring lives from new ones.
RING_EPOCHS = 2 * HORIZON_EPOCHS


def bucket_of_age() -> list[int]:
    """Age bucket of every age in epochs ``0..HORIZON_EPOCHS`` (the last one: past the horizon)."""
    out = []
    lower = 0
    for b, upper in enumerate(BUCKET_EDGES):
        out.extend([b] * (upper - lower))
        lower = upper
    out.append(N_BUCKETS)
    return out


BUCKET_OF_AGE: list[int] = bucket_of_age()
_BUCKET = np.asarray(BUCKET_OF_AGE[:-1])
_STARTS = np.asarray((0, *BUCKET_EDGES[:-1]), dtype=float)
_WIDTHS = np.diff(np.asarray((0, *BUCKET_EDGES), dtype=float))
# _ONE_HOT[a, b] = 1 where age a (epochs, below the horizon) lies in bucket b: sums ages into buckets.
_ONE_HOT = (_BUCKET[:, None] == np.arange(N_BUCKETS)[None, :]).astype(float)
# Where each age lies inside its bucket (0 at the bucket's start, towards 1 at its end).
_AGE_FRACTION = (np.arange(HORIZON_EPOCHS) - _STARTS[_BUCKET]) / _WIDTHS[_BUCKET]


def hazards(
    reuses: np.ndarray, at_risk: np.ndarray, prior_lives: float, pooled: np.ndarray | None = None
) -> np.ndarray:
    """Reuse hazard per (class, bucket), shrunk toward ``pooled`` (by default the pooled hazard
    of the classes given)."""
    if pooled is None:
        pooled = np.divide(reuses.sum(0), at_risk.sum(0), out=np.zeros(reuses.shape[1]), where=at_risk.sum(0) > 0)
    lives = at_risk + prior_lives
    shrunk = np.divide(reuses + prior_lives * pooled, lives, out=np.zeros_like(lives), where=lives > 0)
    return np.where(lives > 0, shrunk, pooled)


def gittins_index(hazard: np.ndarray) -> np.ndarray:
    """``I[c, b]``: the best ratio of expected reuses to expected occupancy from bucket ``b`` on.

    ``hazard`` is (classes, buckets); the result has one more column, 0, for ages past the
    horizon (nothing is known there, so such blocks go first).
    """
    n_classes, n_buckets = hazard.shape
    alive = np.ones((n_classes, n_buckets))
    alive[:, 1:] = np.cumprod(1.0 - hazard, axis=1)[:, :-1]
    reuse = alive * hazard
    occupancy = _WIDTHS[:n_buckets] * (alive - reuse / 2.0)
    cum_reuse = np.zeros((n_classes, n_buckets + 1))
    cum_reuse[:, 1:] = np.cumsum(reuse, axis=1)
    cum_occ = np.zeros((n_classes, n_buckets + 1))
    cum_occ[:, 1:] = np.cumsum(occupancy, axis=1)
    # [c, b, t]: reuses and occupancy from the start of bucket b to the end of bucket t - 1
    gained = cum_reuse[:, None, :] - cum_reuse[:, :, None]
    held = cum_occ[:, None, :] - cum_occ[:, :, None]
    later = np.triu(np.ones((n_buckets + 1, n_buckets + 1), dtype=bool), k=1)
    ratio = np.divide(gained, held, out=np.zeros_like(gained), where=later & (held > 1e-12))
    return ratio.max(axis=2)


def index_by_age(index: np.ndarray) -> np.ndarray:
    """Per-epoch form of a per-bucket index: ``[c, a]`` for ages ``0..HORIZON_EPOCHS``, linear
    between bucket starts, 0 at the horizon and past it."""
    start = index[:, _BUCKET]
    per_age = start + _AGE_FRACTION * (index[:, _BUCKET + 1] - start)
    return np.concatenate([per_age, np.zeros((len(index), 1))], axis=1)


class ReuseModel:
    """Life statistics of the sampled blocks, folded into an index on :meth:`refresh`.

    Events are reported with :meth:`add` as arrays of integer codes; ``slot = epoch %
    RING_EPOCHS`` names the epoch a life started in:

    * ``starts``: ``cls * RING_EPOCHS + slot`` when a life starts;
    * ``ends``: the same code of a life reused before the horizon;
    * ``reuses``: ``cls * N_BUCKETS + bucket`` of that reuse's age.

    :meth:`refresh` must be called at least once a horizon. Finished lives are weighted down
    with a half-life of ``half_life_epochs`` so that the model follows a workload that drifts;
    lives in progress count fully.
    """

    def __init__(self, n_classes: int, *, prior_lives: float, half_life_epochs: float) -> None:
        self.n_classes = n_classes
        self.prior_lives = prior_lives
        self.decay_per_epoch = 0.5 ** (1.0 / half_life_epochs)
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._ongoing = np.zeros((n_classes, RING_EPOCHS))
        self._reused = np.zeros((n_classes, N_BUCKETS))
        self._expired = np.zeros(n_classes)
        self._folded_epoch = 0

    def add(self, starts: np.ndarray, ends: np.ndarray, reuses: np.ndarray) -> None:
        """Report events of touches before the next :meth:`refresh`'s epoch."""
        self._pending.append((starts, ends, reuses))

    def refresh(self, epoch: int) -> list[list[float]]:
        """Fold the events reported before ``epoch`` began; return the index by class and age
        in epochs (``[c][a]``, ``a`` up to ``HORIZON_EPOCHS``, the last entry for older)."""
        self._fold(epoch)
        reused, at_risk = self.life_table(epoch)
        # Classes never seen have the pooled hazard; their rows are computed once and shared.
        seen = np.flatnonzero(at_risk[:, 0] > 0)
        pooled = hazards(reused.sum(0, keepdims=True), at_risk.sum(0, keepdims=True), 0.0)
        hazard = np.concatenate([hazards(reused[seen], at_risk[seen], self.prior_lives, pooled[0]), pooled])
        rows = index_by_age(gittins_index(hazard)).tolist()
        table = [rows[-1]] * self.n_classes
        for row, cls in zip(rows, seen.tolist(), strict=False):
            table[cls] = row
        return table

    def _fold(self, epoch: int) -> None:
        k, ring = self.n_classes, RING_EPOCHS
        if epoch - self._folded_epoch > HORIZON_EPOCHS:
            raise RuntimeError("ReuseModel.refresh must be called at least once a horizon")
        starts, ends, reuses = (
            np.concatenate([np.asarray(p[i], dtype=np.int64) for p in self._pending] or [np.zeros(0, np.int64)])
            for i in range(3)
        )
        self._pending = []
        ongoing = self._ongoing.reshape(-1)
        ongoing += np.bincount(starts, minlength=k * ring)
        ongoing -= np.bincount(ends, minlength=k * ring)
        decay = self.decay_per_epoch ** (epoch - self._folded_epoch)
        self._reused = self._reused * decay + np.bincount(reuses, minlength=k * N_BUCKETS).reshape(k, N_BUCKETS)
        # Lives that started a horizon or more ago and are still open were never reused.
        first = self._folded_epoch - HORIZON_EPOCHS + 1  # earlier starts expired at the last fold
        expiring = [e % ring for e in range(first, epoch - HORIZON_EPOCHS + 1)]
        self._expired = self._expired * decay + self._ongoing[:, expiring].sum(axis=1)
        self._ongoing[:, expiring] = 0.0
        self._folded_epoch = epoch

    def life_table(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Reuses and lives at risk per (class, bucket), in-progress lives counted half."""
        slot_of_age = (epoch - np.arange(HORIZON_EPOCHS)) % RING_EPOCHS
        ongoing = self._ongoing[:, slot_of_age] @ _ONE_HOT
        reached = np.cumsum((self._reused + ongoing)[:, ::-1], axis=1)[:, ::-1] + self._expired[:, None]
        return self._reused, reached - ongoing / 2.0
