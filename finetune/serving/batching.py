"""Batching across requests: the texts of concurrent requests go through the model together.

Requests wait in a queue; one task takes them in arrival order, up to ``max_batch`` texts, and
hands them to the ``Predictor`` in a thread of its own (so the server keeps reading requests
while the model runs), which sorts them by length and splits them into forward passes of
neighbours within its token budget, as it does for a file. A request is answered as soon as
the pass that holds its last text ends, not when the whole gathered batch does: its client's
next request then queues while the model runs the remaining passes, so the model does not sit
idle while answers go out and new requests come in. Each caller gets the scores of its own
texts, in its own order.

How long to wait for company: a request that finds the model idle after a pass that served a
single request goes at once (a lone client pays no wait); once passes serve several requests,
the first of a batch waits up to ``max_wait_ms`` for more. Requests that arrive while a pass
runs are queued meanwhile and make up the next one.
"""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from finetune.inference.predictor import Predictor, Text


@dataclass
class Pending:
    """One request's texts, and the future its handler awaits."""

    texts: List[Text]
    future: asyncio.Future
    pairs: bool = field(init=False)

    def __post_init__(self):
        self.pairs = bool(self.texts) and isinstance(self.texts[0], tuple)


class Batcher:
    """Gathers the texts of concurrent requests into batches of up to ``max_batch`` rows, run pass by pass."""

    def __init__(self, predictor: Predictor, max_batch: int = 64, max_wait_ms: float = 5.0):
        self.predictor, self.max_batch, self.max_wait = predictor, max_batch, max_wait_ms / 1000
        if predictor.batch_size > max_batch:  # a request of more texts than max_batch runs as several passes
            raise ValueError(f"The predictor's batch_size {predictor.batch_size} exceeds max_batch {max_batch}.")
        self.queue: "asyncio.Queue[Pending]" = asyncio.Queue()
        self.executor = ThreadPoolExecutor(
            1, thread_name_prefix="forward"
        )  # one pass at a time: the model's threads are its own
        self.held: Optional[Pending] = None  # a request that did not fit the last batch: first of the next
        self.last_requests = 0
        self.requests = self.texts = self.batches = 0

    async def scores(self, texts: List[Text]):
        """The kind's scores of ``texts`` (one row each, in order), computed with whatever else is queued."""
        future = asyncio.get_running_loop().create_future()
        self.requests += 1
        self.texts += len(texts)
        await self.queue.put(Pending(texts, future))
        return await future

    async def run(self) -> None:
        """Serve the queue until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            self.batches += 1
            try:
                await loop.run_in_executor(self.executor, self._answer, loop, batch)
            except Exception as error:  # noqa: BLE001 - each waiting request gets the error; the server goes on
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)

    def _answer(self, loop: asyncio.AbstractEventLoop, batch: List[Pending]) -> None:
        """In the model's thread: run the batch pass by pass, answering each request once all its
        texts are scored (the event loop sends the answer while the next pass runs)."""
        import numpy as np

        texts = [text for item in batch for text in item.texts]
        owner = np.repeat(np.arange(len(batch)), [len(item.texts) for item in batch])  # the request of each text
        missing = [len(item.texts) for item in batch]
        starts = np.cumsum([0] + missing[:-1])
        scores = None
        for rows, part in self.predictor.passes(texts):
            if scores is None:
                scores = np.empty((len(texts),) + part.shape[1:], dtype=part.dtype)
            scores[rows] = part
            indices, counts = np.unique(owner[rows], return_counts=True)
            for index, count in zip(indices, counts):
                missing[index] -= int(count)
                if missing[index] == 0:
                    answer = scores[starts[index] : starts[index] + len(batch[index].texts)].copy()
                    loop.call_soon_threadsafe(_resolve, batch[index].future, answer)

    async def _gather(self) -> List[Pending]:
        # Wait for company only when the model is idle and the queue empty: requests that queued
        # while the model ran go at once.
        waited = self.held is None and self.queue.empty()
        first = self.held or await self.queue.get()
        self.held = None
        batch, rows = [first], len(first.texts)
        deadline = time.monotonic() + (self.max_wait if waited and self.last_requests > 1 else 0.0)
        while rows < self.max_batch:
            item = await self._next(deadline)
            if item is None:
                break
            if item.pairs != first.pairs or rows + len(item.texts) > self.max_batch:
                self.held = item  # texts and pairs go through the model separately; a full batch goes now
                break
            batch.append(item)
            rows += len(item.texts)
        self.last_requests = len(batch)
        return batch

    async def _next(self, deadline: float) -> Optional[Pending]:
        """The next queued request, waiting for one until ``deadline`` at most."""
        if not self.queue.empty():
            return self.queue.get_nowait()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            return await asyncio.wait_for(self.queue.get(), remaining)
        except asyncio.TimeoutError:
            return None

    def stats(self) -> Dict[str, int]:
        """Counts since the server started: what a test or a dashboard reads to see the batching."""
        return {
            "requests": self.requests,
            "texts": self.texts,
            "batches": self.batches,
            "forward_passes": self.predictor.forward_passes,
            "rows": self.predictor.rows_passed,
        }

    def close(self) -> None:
        self.executor.shutdown(wait=True)


def _resolve(future: asyncio.Future, answer: Any) -> None:
    if not future.done():  # a caller that went away cancelled its future
        future.set_result(answer)
