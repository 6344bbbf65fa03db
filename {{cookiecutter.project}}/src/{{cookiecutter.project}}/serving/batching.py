"""Dynamic batching: concurrent requests share one model call, each gets its own answer back.

The model runs in one thread beside the event loop. The first request on an idle batcher starts a
task that feeds the model until the queue is empty; while the model is busy, new requests queue,
and when it is free everything queued (up to `max_batch` sessions) goes into the next call.
Before a call the batcher waits at most `wait_s` for requests that are already being read
(`incoming()`), and not at all when none is: a lone request on an idle server goes straight on.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from .contract import Predict

Recommendations = list[list[tuple[str, float]]]


@dataclass(frozen=True)
class _Job:
    sessions: list[list[str]]
    k: int
    future: asyncio.Future[Recommendations]


class MicroBatcher:
    """Gathers concurrent `recommend` calls into one `predict` call (no task to start or stop)."""

    def __init__(self, predict: Predict, max_batch: int = 256, wait_s: float = 0.002) -> None:
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.calls = 0  # model calls made (tests and the bench read these)
        self.sessions = 0
        self._predict = predict
        self._queue: deque[_Job] = deque()
        self._queued_sessions = 0
        self._incoming = 0
        self._draining: asyncio.Task[None] | None = None  # the one task feeding the model
        self._arrival: asyncio.Future[None] | None = None  # set when a request arrives
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="model")

    @contextmanager
    def incoming(self) -> Iterator[None]:
        """Wrap the reading and parsing of a request: the batcher may wait for it to arrive."""
        self._incoming += 1
        try:
            yield
        finally:
            self._incoming -= 1
            self._arrived()

    async def recommend(self, sessions: list[list[str]], k: int) -> Recommendations:
        """Top-k per session, computed in a batch with whatever else is waiting."""
        future: asyncio.Future[Recommendations] = asyncio.get_running_loop().create_future()
        self._queue.append(_Job(sessions, k, future))
        self._queued_sessions += len(sessions)
        self._arrived()
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain(), name="batcher")
        return await future

    def close(self) -> None:
        self._executor.shutdown(wait=False)

    def _arrived(self) -> None:
        if self._arrival is not None and not self._arrival.done():
            self._arrival.set_result(None)

    async def _drain(self) -> None:
        """Feed the model until the queue is empty; requests queue while it computes."""
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
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
            self._draining = None  # no await since the queue was seen empty: nothing is stranded

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait (at most `wait_s`) while requests are being read and the batch has room."""
        deadline = loop.time() + self.wait_s
        while self._queued_sessions < self.max_batch and self._incoming > 0:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrival = loop.create_future()
            await asyncio.wait([self._arrival], timeout=remaining)
            self._arrival = None

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
