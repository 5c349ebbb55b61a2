"""An order-preserving parallel map over worker processes that holds at most ``window`` items in flight,
so a long stream (e.g. images read out of a 4 GB archive) never piles up in memory."""

from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Iterator


def ordered_map(fn: Callable, items: Iterable, workers: int, window: int | None = None) -> Iterator:
    if workers <= 1:
        yield from map(fn, items)
        return
    window = window or 4 * workers
    # "spawn": workers start clean, never inheriting open HDF5 handles from the parent.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        pending: deque = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()
