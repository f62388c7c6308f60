"""Adaptive batching: concurrent requests for one model version become one model call.

A batch is sent as soon as every caller known to be on its way has joined,
the batch is full, or its rows have waited ``max_wait`` seconds. Callers
on their way are those that joined and have not submitted yet, and, for
``max_wait`` after a batch is answered, the callers it answered: under
load they send again at once, and without this the one row that arrived
during a big batch would go alone, then the rest, alternating 1-row and
full batches. One caller alone is never held back, so batching costs a lone
client nothing. Each caller gets exactly its own rows back, by offset.

A batch runs on the inference threads, or on the event loop itself when ``inline(rows)`` says the model
answers that many rows faster than the hand-over to a thread costs (small compiled models).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

Columns = dict[str, np.ndarray]


@dataclass
class _Item:
    columns: Columns
    rows: int
    future: asyncio.Future
    settled: list[bool] = field(default_factory=lambda: [False])


class Batcher:
    def __init__(
        self,
        predict: Callable[[Columns], Columns],
        *,
        max_batch: int,
        max_wait: float,
        executor: Executor,
        concurrent_batches: int = 1,
        on_batch: Callable[[int], None] | None = None,
        inline: Callable[[int], bool] | None = None,
    ) -> None:
        self._predict = predict
        self._inline = inline
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.concurrent_batches = concurrent_batches
        self._executor = executor
        self._on_batch = on_batch
        self._pending: list[_Item] = []
        self._pending_rows = 0
        self._running = 0  # callers whose rows are in batches being computed
        self._batches_running = 0
        self._expected = 0  # callers that have joined and not yet had their answer
        self._timer: asyncio.TimerHandle | None = None
        self._first_at = 0.0
        self._returning = 0  # callers answered by the last batch, expected back until _returning_until
        self._returning_until = 0.0

    @property
    def idle(self) -> bool:
        return self._expected == 0 and not self._pending and not self._running

    @contextlib.asynccontextmanager
    async def caller(self) -> AsyncIterator[Callable[[Columns, int], asyncio.Future]]:
        """Join before parsing the request, so a batch can wait for this caller's rows."""
        self._expected += 1
        if self._returning:
            self._returning -= 1  # one of the callers the last batch answered is back
        settled = [False]

        def submit(columns: Columns, rows: int) -> asyncio.Future:
            future = asyncio.get_running_loop().create_future()
            if not self._pending:
                self._first_at = asyncio.get_running_loop().time()
            self._pending.append(_Item(columns, rows, future, settled))
            self._pending_rows += rows
            self._maybe_send()
            return future

        try:
            yield submit
        finally:
            if not settled[0]:  # left without an answer (bad input or cancelled): stop waiting for it
                settled[0] = True
                self._expected -= 1
                self._maybe_send()
            elif self._returning:
                # Answered: it may be back soon. The event loop answers a big batch's callers one after
                # another, so the wait for them counts from the last one out, not from the batch's end.
                self._returning_until = asyncio.get_running_loop().time() + self.max_wait

    def _maybe_send(self) -> None:
        """Send batches while a slot is free and one is due; else make sure a timer will look again."""
        while self._batches_running < self.concurrent_batches and self._pending:
            if not self._send_if_due():
                return

    def _send_if_due(self) -> bool:
        loop = asyncio.get_running_loop()
        now = loop.time()
        returning = self._returning if now < self._returning_until else 0
        still_coming = self._expected - self._running - len(self._pending) + returning
        # Rows that waited through the last batch get up to max_wait more, for the callers it answered.
        deadline = max(self._first_at + self.max_wait, self._returning_until if returning else 0.0)
        if self._pending_rows >= self.max_batch or still_coming <= 0 or now >= deadline:
            self._send()
            return True
        if self._timer is None:
            self._timer = loop.call_later(deadline - now, self._on_timer)
        return False

    def _on_timer(self) -> None:
        self._timer = None
        self._maybe_send()  # the window may have moved on since the timer was set

    def _send(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, rows = [], 0
        while self._pending and (not batch or rows + self._pending[0].rows <= self.max_batch):
            item = self._pending.pop(0)
            if item.future.done():  # the caller went away while waiting
                self._pending_rows -= item.rows
                continue
            batch.append(item)
            rows += item.rows
        self._pending_rows -= rows
        if not batch:
            return
        if self._pending:
            self._first_at = asyncio.get_running_loop().time()
        self._running += len(batch)
        self._batches_running += 1
        asyncio.get_running_loop().create_task(self._run(batch, rows))

    async def _run(self, batch: list[_Item], rows: int) -> None:
        try:
            await self._compute(batch, rows)
        finally:
            self._running -= len(batch)
            self._batches_running -= 1
            self._maybe_send()

    async def _compute(self, batch: list[_Item], rows: int) -> None:
        columns = (
            batch[0].columns
            if len(batch) == 1
            else {name: np.concatenate([item.columns[name] for item in batch]) for name in batch[0].columns}
        )
        try:
            if self._inline is not None and self._inline(rows):
                outputs = self._predict(columns)  # cheaper than the trip to a thread and back
            else:
                outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self._predict, columns)
        except Exception as exc:  # noqa: BLE001 - handed to the callers, who answer it
            if len(batch) == 1:
                self._settle(batch[0], error=exc)
                return
            # One caller's rows may be what failed: each caller alone, so only that one hears the error.
            for item in batch:
                await self._compute([item], item.rows)
            return
        if self._on_batch is not None:
            self._on_batch(rows)
        self._returning = len(batch)
        self._returning_until = asyncio.get_running_loop().time() + self.max_wait
        offset = 0
        for item in batch:
            self._settle(item, result={name: values[offset : offset + item.rows] for name, values in outputs.items()})
            offset += item.rows

    def _settle(self, item: _Item, *, result: Columns | None = None, error: BaseException | None = None) -> None:
        if not item.settled[0]:
            item.settled[0] = True
            self._expected -= 1
        if not item.future.done():
            if error is not None:
                item.future.set_exception(error)
            else:
                item.future.set_result(result)
