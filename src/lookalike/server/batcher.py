"""Micro-batching: concurrent requests share one encoder call instead of queueing behind a lock."""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np

_STOP = object()
POLL_S = 0.0005


class MicroBatcher:
    """Runs `fn` on batches stacked from single inputs submitted by many threads or event loops.

    Each of `workers` threads (one per core suits an encoder whose runs are single-threaded) takes
    every input already waiting (up to `max_batch`); if callers have
    announced inputs still being prepared (`expecting()`), it waits at most `max_wait_s` for them,
    then calls `fn` once on the stacked batch. While it runs, newly submitted inputs queue up for
    the next batch. A lone request never waits; `max_batch=1` runs inputs one by one.
    """

    def __init__(
        self,
        fn: Callable[[np.ndarray], np.ndarray],
        max_batch: int = 16,
        max_wait_s: float = 0.002,
        workers: int = 1,
    ) -> None:
        if max_batch < 1 or workers < 1:
            raise ValueError("max_batch and workers must be at least 1")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.batches = 0  # calls to fn, for stats
        self.inputs = 0  # inputs embedded, for stats
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._expected = 0  # inputs announced but not submitted yet
        self._expected_lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, name=f"lookalike-batcher-{n}", daemon=True) for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    @contextmanager
    def expecting(self) -> Iterator[None]:
        """Announce an input being prepared (e.g. an upload being decoded), so a batch about to
        start waits for it rather than leaving it for the next one."""
        with self._expected_lock:
            self._expected += 1
        try:
            yield
        finally:
            with self._expected_lock:
                self._expected -= 1

    def submit(self, item: np.ndarray) -> Future:
        """A future for the row of `fn`'s output for this input (await it with asyncio.wrap_future)."""
        future: Future = Future()
        self._queue.put((item, future))
        return future

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout=5)

    def _collect(self, first: tuple) -> tuple[list, bool]:
        """`first` plus whatever else arrives in time; the flag says a stop was requested."""
        batch = [first]
        deadline = time.perf_counter() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                got = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or not self._expected:
                    break
                try:  # short slices, so a batch stops waiting as soon as nothing more is announced
                    got = self._queue.get(timeout=min(remaining, POLL_S))
                except queue.Empty:
                    continue
            if got is _STOP:
                return batch, True
            batch.append(got)
        return batch, False

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stop = self._collect(first)
            live = [(item, fut) for item, fut in batch if fut.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                out = self.fn(np.stack([item for item, _ in live]))
            except Exception as e:  # every waiter hears about the failure; the worker carries on
                for _, fut in live:
                    fut.set_exception(e)
                continue
            with self._expected_lock:
                self.batches += 1
                self.inputs += len(live)
            for row, (_, fut) in zip(out, live):
                fut.set_result(row)
