"""Micro-batching: concurrent requests share one encoder call instead of queueing behind a lock."""
from __future__ import annotations

import asyncio
import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable

import numpy as np

_STOP = object()


class MicroBatcher:
    """Runs `fn` on batches stacked from single inputs submitted by many threads or event loops.

    One worker thread takes every input already waiting (up to `max_batch`), waits at most
    `max_wait_s` for more to arrive, then calls `fn` once on the stacked batch; while it runs,
    newly submitted inputs queue up for the next batch. `max_batch=1` runs inputs one by one.
    """

    def __init__(
        self, fn: Callable[[np.ndarray], np.ndarray], max_batch: int = 16, max_wait_s: float = 0.002
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.batches = 0  # calls to fn, for stats
        self.inputs = 0  # inputs embedded, for stats
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="lookalike-batcher", daemon=True)
        self._thread.start()

    def submit(self, item: np.ndarray) -> Future:
        future: Future = Future()
        self._queue.put((item, future))
        return future

    async def run(self, item: np.ndarray) -> np.ndarray:
        """The row of `fn`'s output for this one input, awaited without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(item))

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=5)

    def _collect(self, first: tuple) -> tuple[list, bool]:
        """`first` plus whatever else arrives in time; the flag says a stop was requested."""
        batch = [first]
        deadline = time.perf_counter() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                got = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    got = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
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
            self.batches += 1
            self.inputs += len(live)
            for row, (_, fut) in zip(out, live):
                fut.set_result(row)
