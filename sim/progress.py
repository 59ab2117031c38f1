"""A progress bar over simulated time, with requests done and an ETA (tqdm, on stderr)."""

from __future__ import annotations

from tqdm import tqdm


class SimProgress:
    def __init__(self, horizon_s: float, n_requests: int) -> None:
        self._bar = tqdm(
            total=max(horizon_s, 1e-9),
            unit="sim-s",
            unit_scale=False,
            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} sim-s [{elapsed}<{remaining}] {postfix}",
            dynamic_ncols=True,
        )
        self._n_requests = n_requests

    def update(self, now_s: float, done: int) -> None:
        self._bar.n = min(now_s, self._bar.total)
        self._bar.set_postfix_str(f"{done}/{self._n_requests} requests", refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()
