"""Worker processes for decoding: an order-preserving parallel map that holds at most ``window`` items in flight,
so a long stream (e.g. images read out of a 4 GB archive) never piles up in memory."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Callable, Iterable, Iterator


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[Executor | None]:
    """A pool of ``workers`` forked processes (None for 0 or 1: work in this process).

    Every worker is forked when the pool opens, so open it before opening any HDF5 file: a forked child must not
    inherit a writable HDF5 handle. Forking (not spawning) means no interpreter start-up or imports per worker.
    """
    if workers <= 1:
        yield None
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"),
                             initializer=_exit_with_parent, initargs=(os.getpid(),)) as pool:
        pool.submit(int).result()  # with "fork", the first submit starts every worker
        yield pool


def _exit_with_parent(parent: int) -> None:
    """Worker start-up: end this worker when its parent dies, even by kill -9 (which runs no clean-up), instead of
    leaving it orphaned. Linux: the kernel signals it (PR_SET_PDEATHSIG); elsewhere a thread watches the parent."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def ordered_map(fn: Callable, items: Iterable, pool: Executor | None, window: int = 8) -> Iterator:
    """``map(fn, items)`` on the pool, results in input order, at most ``window`` items submitted ahead."""
    if pool is None:
        yield from map(fn, items)
        return
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
