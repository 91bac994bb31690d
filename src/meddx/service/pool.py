"""A bounded pool of inference threads that batches what is queued: each worker takes a job, then everything
else waiting for the same model (up to `max_batch`), decodes the uploads and calls `predict_batch` once.

Admission is bounded: when `limit` jobs are already in flight, `submit` raises `Busy` (the server answers 503)
instead of letting a queue grow without end. Everything CPU-bound (decoding, the model, saving the results) runs
in these threads, never on the server's event loop.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from meddx.errors import MeddxError

log = logging.getLogger(__name__)


class Busy(Exception):
    """The pool already holds its limit of jobs (HTTP 503)."""


@dataclass
class Job:
    """One request's work: `decode()` -> image, then the model named `model` with `options`, then `finish`."""

    model: str
    decode: Callable[[], Any]
    options: dict[str, Any] = field(default_factory=dict)
    finish: Callable[[Any, Any], Any] | None = None  # (image, prediction) -> response value
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)
    started_at: float = 0.0

    def key(self) -> tuple[str, tuple[tuple[str, Any], ...]]:
        return self.model, tuple(sorted(self.options.items()))


class InferencePool:
    """`workers` threads predicting with `predictors` (name -> in-memory predictor); at most `limit` jobs in flight."""

    def __init__(self, predictors: dict[str, Any], workers: int = 2, limit: int = 32, max_batch: int = 16) -> None:
        if workers < 1 or limit < 1:
            raise ValueError("workers and the queue limit must be >= 1")
        self.predictors = predictors
        self.limit = limit
        self.max_batch = max_batch
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._in_flight = 0
        self.batches: list[int] = []  # sizes of recent model calls (kept short), for /healthz and the benchmark
        self._threads = [threading.Thread(target=self._work, name=f"meddx-infer-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def submit(self, job: Job) -> Future:
        """Queue `job`; Busy when `limit` jobs are already waiting or running."""
        with self._lock:
            if self._in_flight >= self.limit:
                raise Busy(f"{self._in_flight} requests in flight (limit {self.limit})")
            self._in_flight += 1
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout=30)

    def _take(self) -> list[Job] | None:
        first = self._queue.get()
        if first is None:
            return None
        jobs = [first]
        while len(jobs) < self.max_batch:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:  # closing: let another worker see it
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
                    self._run_group(group)
                except BaseException as exc:  # noqa: BLE001 - a worker must never die; the job gets the error
                    for j in group:
                        if not j.future.done():
                            j.future.set_exception(exc)
            with self._lock:
                self._in_flight -= len(jobs)

    def _run_group(self, group: Sequence[Job]) -> None:
        """Decode each job's upload (a bad one fails alone), predict the rest in one batch, finish each."""
        predictor = self.predictors[group[0].model]
        ready: list[tuple[Job, Any]] = []
        for j in group:
            j.started_at = time.perf_counter()
            try:
                ready.append((j, j.decode()))
            except Exception as exc:  # noqa: BLE001 - handed to the request, which maps it to a 4xx/5xx
                j.future.set_exception(exc)
        if not ready:
            return
        options = dict(group[0].options)
        images = [img for _, img in ready]
        try:
            preds = predictor.predict_batch(images, **options) if len(images) > 1 else \
                [predictor.predict(images[0], **options)]
        except MeddxError:
            preds = None  # one image is the problem: one at a time, so only its request fails
        self.batches = (self.batches + [len(images)])[-1000:]
        for i, (j, img) in enumerate(ready):
            try:
                pred = preds[i] if preds is not None else predictor.predict(img, **options)
                j.future.set_result(j.finish(img, pred) if j.finish else pred)
            except Exception as exc:  # noqa: BLE001
                j.future.set_exception(exc)
