"""Bounded, batching inference for the service: admission control (at most `limit` requests in flight, else
`Busy` -> HTTP 503), decoding and result writing in a small thread pool, and `workers` model threads that each
take a job plus everything else queued (up to `max_batch`; waiting at most `batch_wait_s` for requests still
being decoded) and call `predict_batch` once per model.

Nothing CPU-bound runs on the server's event loop; the queue cannot grow without bound.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from meddx.errors import MeddxError

log = logging.getLogger(__name__)


class Busy(Exception):
    """The pool already holds its limit of requests (HTTP 503)."""


@dataclass
class Job:
    """One image waiting for the model named `model`, called with `options`."""

    model: str
    image: Any
    options: dict[str, Any] = field(default_factory=dict)
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)

    def key(self) -> tuple[str, tuple[tuple[str, Any], ...]]:
        return self.model, tuple(sorted(self.options.items()))


class InferencePool:
    """`workers` model threads for `predictors` (name -> in-memory predictor); at most `limit` requests in flight;
    `cpu_threads` threads decode uploads and write results around the model calls."""

    def __init__(self, predictors: dict[str, Any], workers: int = 1, limit: int = 32, max_batch: int = 32,
                 cpu_threads: int | None = None, batch_wait_s: float = 0.004) -> None:
        if workers < 1 or limit < 1:
            raise ValueError("workers and the queue limit must be >= 1")
        self.predictors = predictors
        self.limit = limit
        self.max_batch = max_batch
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._decoding = 0  # requests being decoded right now: a model thread waits briefly for them to batch
        self.batch_wait_s = batch_wait_s
        self._cpu = ThreadPoolExecutor(max_workers=cpu_threads or max(2, 2 * workers), thread_name_prefix="meddx-io")
        self.batches: list[int] = []  # sizes of recent model calls (for /healthz and the benchmark)
        self._threads = [threading.Thread(target=self._work, name=f"meddx-model-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Count one request in flight for the block; Busy at once when `limit` are already in flight."""
        with self._lock:
            if self._in_flight >= self.limit:
                raise Busy(f"{self._in_flight} requests in flight (limit {self.limit})")
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    async def run(self, model: str, decode: Callable[[], Any], finish: Callable[[Any, Any], Any],
                  options: dict[str, Any] | None = None) -> Any:
        """Admit, decode (thread), predict (model thread, batched with others), finish (thread)."""
        loop = asyncio.get_running_loop()
        with self.admit():
            with self._lock:
                self._decoding += 1
            try:
                image = await loop.run_in_executor(self._cpu, decode)
                job = Job(model, image, dict(options or {}))
                self._queue.put(job)
            finally:
                with self._lock:
                    self._decoding -= 1
            pred = await asyncio.wrap_future(job.future)
            return await loop.run_in_executor(self._cpu, finish, image, pred)

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout=30)
        self._cpu.shutdown(wait=False, cancel_futures=True)

    def _take(self) -> list[Job] | None:
        first = self._queue.get()
        if first is None:
            return None
        jobs = [first]
        deadline = time.perf_counter() + self.batch_wait_s
        while len(jobs) < self.max_batch:
            # take what is queued; wait (a few ms at most) only while other requests are still being decoded
            wait = deadline - time.perf_counter() if self._decoding > 0 else 0.0
            try:
                nxt = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                if self._decoding > 0 and time.perf_counter() < deadline:
                    continue
                break
            if nxt is None:  # closing: let another worker see it too
                self._queue.put(None)
                break
            jobs.append(nxt)
        return jobs

    def _work(self) -> None:
        while (jobs := self._take()) is not None:
            groups: dict[Any, list[Job]] = {}
            for j in jobs:
                groups.setdefault(j.key(), []).append(j)
            for group in groups.values():
                try:
                    self._predict(group)
                except BaseException as exc:  # noqa: BLE001 - a model thread must never die; the jobs get it
                    for j in group:
                        if not j.future.done():
                            j.future.set_exception(exc)

    def _predict(self, group: Sequence[Job]) -> None:
        """One `predict_batch` for the group; when it refuses one image, one at a time so only that job fails."""
        predictor = self.predictors[group[0].model]
        options = dict(group[0].options)
        images = [j.image for j in group]
        try:
            preds = predictor.predict_batch(images, **options) if len(images) > 1 else \
                [predictor.predict(images[0], **options)]
        except MeddxError:
            preds = None
        self.batches = (self.batches + [len(images)])[-1000:]
        for i, j in enumerate(group):
            try:
                j.future.set_result(preds[i] if preds is not None else predictor.predict(j.image, **options))
            except Exception as exc:  # noqa: BLE001
                j.future.set_exception(exc)
