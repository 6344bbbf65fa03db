"""Dynamic batching: concurrent requests share one model call, each gets its own answer back.

The model runs in one thread beside the event loop. While it is busy, new requests queue; when it
is free, everything queued (up to `max_batch` sessions) goes into the next call. Before a call the
batcher waits at most `wait_s` for requests that are already being read (`incoming()`), and not at
all when none is: a single request on an idle server goes straight to the model.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from .contract import Predict

Recommendations = list[list[tuple[str, float]]]


@dataclass(frozen=True)
class _Job:
    sessions: list[list[str]]
    k: int
    future: asyncio.Future[Recommendations]


class MicroBatcher:
    """Gathers concurrent `recommend` calls into one `predict` call; start with `run()`."""

    def __init__(self, predict: Predict, max_batch: int = 256, wait_s: float = 0.002) -> None:
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.calls = 0  # model calls made (tests and the bench read these)
        self.sessions = 0
        self._predict = predict
        self._queue: deque[_Job] = deque()
        self._queued_sessions = 0
        self._incoming = 0
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="model")

    @contextmanager
    def incoming(self) -> Iterator[None]:
        """Wrap the reading and parsing of a request: the batcher may wait for it to arrive."""
        self._incoming += 1
        try:
            yield
        finally:
            self._incoming -= 1
            self._wake.set()

    async def recommend(self, sessions: list[list[str]], k: int) -> Recommendations:
        """Top-k per session, computed in a batch with whatever else is waiting."""
        future: asyncio.Future[Recommendations] = asyncio.get_running_loop().create_future()
        self._queue.append(_Job(sessions, k, future))
        self._queued_sessions += len(sessions)
        self._wake.set()
        return await future

    async def run(self) -> None:
        """The batching loop (one task per event loop); cancel it to stop."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._gather(loop)
                batch = self._take()
                try:
                    answers = await loop.run_in_executor(self._executor, self._call, batch)
                except Exception as exc:  # every request of the batch fails alike (and logs it)
                    for job in batch:
                        if not job.future.done():
                            job.future.set_exception(exc)
                else:
                    for job, recs in zip(batch, answers, strict=True):
                        if not job.future.done():
                            job.future.set_result(recs)
        finally:
            self._executor.shutdown(wait=False)

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> None:
        while not self._queue:
            self._wake.clear()
            await self._wake.wait()
        deadline = loop.time() + self.wait_s
        while self._queued_sessions < self.max_batch and self._incoming > 0:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wake.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)

    def _take(self) -> list[_Job]:
        """Queued jobs up to `max_batch` sessions (at least one job: a request is never split)."""
        batch = [self._queue.popleft()]
        size = len(batch[0].sessions)
        while self._queue and size + len(self._queue[0].sessions) <= self.max_batch:
            size += len(self._queue[0].sessions)
            batch.append(self._queue.popleft())
        self._queued_sessions -= size
        return batch

    def _call(self, batch: list[_Job]) -> list[Recommendations]:
        """One model call for the whole batch (in the model thread), split back per job.

        Top-k lists are sorted, so the largest k of the batch, cut to each job's k, is its answer.
        """
        sessions = [session for job in batch for session in job.sessions]
        recs = self._predict(sessions, max(job.k for job in batch))
        self.calls += 1
        self.sessions += len(sessions)
        if len(recs) != len(sessions):
            raise ValueError(f"predictor answered {len(recs)} lists for {len(sessions)} sessions")
        answers, start = [], 0
        for job in batch:
            answers.append([r[: job.k] for r in recs[start : start + len(job.sessions)]])
            start += len(job.sessions)
        return answers
