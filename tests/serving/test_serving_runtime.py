"""The serving runtime's policies on their own: batching, the model cache's budget, pins, leases and retirement.

These drive the real Batcher and ModelCache classes with a plain numpy
function standing in for TensorFlow, so timing and memory are exact.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from serving.runtime.batcher import Batcher
from serving.runtime.cache import CapacityError, ModelCache
from serving.runtime.loader import VersionSpec
from serving.runtime.signatures import InputError


class SlowDouble:
    """Doubles its input after a pause, recording the batch sizes it was called with."""

    def __init__(self, pause: float = 0.02) -> None:
        self.pause, self.calls = pause, []

    def __call__(self, columns):
        values = columns["x"]
        if (values < 0).any():
            raise InputError("negative")
        self.calls.append(len(values))
        time.sleep(self.pause)
        return {"y": values * 2}


def run(coro):
    return asyncio.run(coro)


def test_concurrent_callers_share_model_calls_and_get_their_own_rows():
    model = SlowDouble()

    async def main():
        batcher = Batcher(model, max_batch=64, max_wait=0.002, executor=ThreadPoolExecutor(1))

        async def one(i):
            async with batcher.caller() as submit:
                await asyncio.sleep(0)
                return await submit({"x": np.array([i, i + 1000])}, 2)

        return await asyncio.gather(*(one(i) for i in range(40)))

    results = run(main())
    for i, result in enumerate(results):
        assert result["y"].tolist() == [2 * i, 2 * (i + 1000)]
    assert sum(model.calls) == 80 and len(model.calls) < 10


def test_a_lone_caller_is_not_held_back():
    model = SlowDouble(pause=0)

    async def main():
        batcher = Batcher(model, max_batch=64, max_wait=1.0, executor=ThreadPoolExecutor(1))
        started = time.perf_counter()
        async with batcher.caller() as submit:
            await submit({"x": np.array([1])}, 1)
        return time.perf_counter() - started

    assert run(main()) < 0.5  # nobody else joined, so the 1 s wait does not apply


def test_batches_respect_the_maximum_size():
    model = SlowDouble()

    async def main():
        batcher = Batcher(model, max_batch=8, max_wait=0.01, executor=ThreadPoolExecutor(1))

        async def one(i):
            async with batcher.caller() as submit:
                return await submit({"x": np.array([i, i, i])}, 3)

        return await asyncio.gather(*(one(i) for i in range(10)))

    results = run(main())
    assert [r["y"][0] for r in results] == [2 * i for i in range(10)]
    assert max(model.calls) <= 8


def test_one_callers_bad_rows_fail_only_that_caller():
    model = SlowDouble()

    async def main():
        batcher = Batcher(model, max_batch=64, max_wait=0.01, executor=ThreadPoolExecutor(1))

        async def one(i):
            async with batcher.caller() as submit:
                return await submit({"x": np.array([-1 if i == 3 else i])}, 1)

        return await asyncio.gather(*(one(i) for i in range(6)), return_exceptions=True)

    results = run(main())
    assert isinstance(results[3], InputError)
    assert [r["y"][0] for i, r in enumerate(results) if i != 3] == [0, 2, 4, 8, 10]


def test_a_caller_that_leaves_before_submitting_does_not_stall_the_batch():
    model = SlowDouble(pause=0)

    async def main():
        batcher = Batcher(model, max_batch=64, max_wait=5.0, executor=ThreadPoolExecutor(1))

        async def leaves():
            async with batcher.caller():
                raise InputError("bad body")

        async def stays():
            async with batcher.caller() as submit:
                return await submit({"x": np.array([4])}, 1)

        started = time.perf_counter()
        results = await asyncio.gather(leaves(), stays(), return_exceptions=True)
        return results, time.perf_counter() - started

    (left, stayed), seconds = run(main())
    assert isinstance(left, InputError) and stayed["y"].tolist() == [8]
    assert seconds < 1.0


class FakeModel:
    def __init__(self, spec: VersionSpec, memory: int) -> None:
        self.spec, self.memory_bytes, self.load_seconds = spec, memory, 0.0


def spec(version: int, size: int = 100) -> VersionSpec:
    return VersionSpec("t1", "acme", "m", version, f"p/{version}/", {"files": {"saved_model.pb": {"size": size}}})


def make_cache(budget: int, *, pinned=(), memory: int = 100, pause: float = 0.0):
    loads = []

    def load(s: VersionSpec):
        loads.append(s.version)
        time.sleep(pause)
        return FakeModel(s, memory)

    cache = ModelCache(budget_bytes=budget, pinned=set(pinned), load=load, load_executor=ThreadPoolExecutor(2))
    return cache, loads


async def use(cache: ModelCache, s: VersionSpec) -> None:
    async with cache.lease(s):
        pass


def test_least_recently_used_idle_model_is_evicted_within_the_budget():
    cache, loads = make_cache(300)

    async def main():
        for version in (1, 2, 3, 1, 4):  # 1 is used again, so 2 is the least recent when 4 arrives
            await use(cache, spec(version))
        return sorted(m.spec.version for m in cache.loaded())

    assert run(main()) == [1, 3, 4]
    assert loads == [1, 2, 3, 4]
    assert cache.unloads == 1 and ("t1", "m", 2) not in cache.counters  # its counters went with it
    assert cache.used_bytes <= 300


def test_pinned_and_in_use_models_are_never_evicted_and_a_model_that_cannot_fit_is_refused():
    cache, _ = make_cache(200, pinned={"acme/m/1"})

    async def main():
        await use(cache, spec(1))
        async with cache.lease(spec(2)):
            with pytest.raises(CapacityError):
                await use(cache, spec(3))  # 1 is pinned, 2 is in use: no room
        await use(cache, spec(3))  # 2 is idle now and goes
        return sorted(m.spec.version for m in cache.loaded())

    assert run(main()) == [1, 3]


def test_concurrent_first_requests_trigger_one_load():
    cache, loads = make_cache(10_000, pause=0.2)

    async def main():
        await asyncio.gather(*(use(cache, spec(7)) for _ in range(20)))

    run(main())
    assert loads == [7]
    assert cache.counters[("t1", "m", 7)].loads == 1


def test_a_retired_version_is_unloaded_when_its_last_request_ends():
    cache, _ = make_cache(10_000)

    async def main():
        async with cache.lease(spec(1)):
            cache.retire(spec(1).key)
            assert cache.is_loaded(spec(1).key)  # still serving the request in flight
        return cache.is_loaded(spec(1).key)

    assert run(main()) is False


def test_a_failed_load_reaches_every_waiter_and_is_retried_only_after_a_pause(monkeypatch):
    from serving.runtime import cache as cache_module

    monkeypatch.setattr(cache_module, "FAILED_LOAD_RETRY_SECONDS", 0.3)
    attempts = []
    lock = threading.Lock()

    def load(s):
        with lock:
            attempts.append(s.version)
        time.sleep(0.05)
        if len(attempts) == 1:
            raise OSError("storage away")
        return FakeModel(s, 10)

    cache = ModelCache(budget_bytes=1000, pinned=set(), load=load, load_executor=ThreadPoolExecutor(1))

    async def main():
        first = await asyncio.gather(*(use(cache, spec(1)) for _ in range(5)), return_exceptions=True)
        with pytest.raises(OSError):
            await use(cache, spec(1))  # at once again: the remembered failure, no second download
        assert attempts == [1]
        await asyncio.sleep(0.35)
        await use(cache, spec(1))
        return first

    first = run(main())
    assert all(isinstance(r, OSError) for r in first)
    assert attempts == [1, 1]
    assert cache.counters[("t1", "m", 1)].load_failures == 1


def test_closed_loop_clients_form_full_batches_not_one_row_and_the_rest():
    """Eight clients that send again as soon as answered: batches of eight, not alternating 1 and 7."""
    model = SlowDouble(pause=0.004)

    async def main():
        batcher = Batcher(model, max_batch=64, max_wait=0.002, executor=ThreadPoolExecutor(1))

        async def client(i):
            await asyncio.sleep(0.001 * i)  # clients start apart
            for _ in range(15):
                await asyncio.sleep(0.0005)  # the answer travels back, the next request comes in
                async with batcher.caller() as submit:
                    await submit({"x": np.array([i])}, 1)

        await asyncio.gather(*(client(i) for i in range(8)))

    run(main())
    assert sum(model.calls) == 120
    assert sum(model.calls) / len(model.calls) >= 6, model.calls


def test_two_batches_compute_at_once_and_each_caller_still_gets_its_rows():
    active, peak = [0], [0]
    lock = threading.Lock()

    def model(columns):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02)
        with lock:
            active[0] -= 1
        return {"y": columns["x"] * 2}

    async def main():
        batcher = Batcher(model, max_batch=4, max_wait=0.0, executor=ThreadPoolExecutor(2), concurrent_batches=2)

        async def one(i):
            async with batcher.caller() as submit:
                return await submit({"x": np.array([i])}, 1)

        return await asyncio.gather(*(one(i) for i in range(16)))

    results = run(main())
    assert [r["y"][0] for r in results] == [2 * i for i in range(16)]
    assert peak[0] == 2
