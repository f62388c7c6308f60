"""Plan rate limits shared through Redis: exact across serving processes, and per process when Redis is away."""

from __future__ import annotations

import os

import pytest
import redis

from tests.support.serving import call, publish_model, serving_server

pytestmark = pytest.mark.django_db(transaction=True)  # the serving apps read the registry from their own threads
PATH = "/v1/models/clicks:predict"


@pytest.fixture
def redis_url() -> str:
    """The machine's Redis (a database of its own); CI fails without it rather than skipping."""
    url = os.environ.get("TEST_RATE_LIMIT_REDIS_URL", "redis://127.0.0.1:6379/13")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis is needed at {url}: {exc}", pytrace=False)
        pytest.skip(f"no Redis at {url}")
    return url


def _small_plan(tenant, per_minute: int) -> None:
    plan = tenant.plan
    plan.slug, plan.pk = f"tiny-{per_minute}", None
    plan.predictions_per_minute = per_minute
    plan.save()
    tenant.plan = plan
    tenant.save()


def test_two_serving_processes_spend_from_one_bucket(tenant_a, tenant_b, redis_url):
    _small_plan(tenant_a.tenant, 10)
    publish_model(tenant_a.tenant, name="clicks", compiled=True)
    publish_model(tenant_b.tenant, name="clicks", compiled=True)
    with (
        serving_server(SERVING_RATE_LIMIT_URL=redis_url) as (first, _),
        serving_server(SERVING_RATE_LIMIT_URL=redis_url) as (second, _),
    ):
        statuses = [
            call(base, "POST", PATH, {"instances": ["1", "2"]}, tenant_a.raw_key)[0]
            for base in (first, second) * 4  # 8 requests of 2 predictions, alternating: 16 asked, 10 allowed
        ]
        assert statuses.count(200) == 5 and statuses.count(429) == 3, statuses
        status, answer, headers = call(second, "POST", PATH, {"instances": ["1"]}, tenant_a.raw_key)
        assert status == 429 and "10 predictions per minute" in answer["error"] and int(headers["Retry-After"]) >= 1
        # Another tenant's bucket is its own.
        assert call(first, "POST", PATH, {"instances": ["1"] * 6}, tenant_b.raw_key)[0] == 200
    assert redis.Redis.from_url(redis_url).exists(f"serving:rate:{tenant_a.tenant.id}")


def test_an_unreachable_store_falls_back_to_the_process_bucket(tenant_a):
    _small_plan(tenant_a.tenant, 3)
    publish_model(tenant_a.tenant, name="clicks", compiled=True)
    with serving_server(SERVING_RATE_LIMIT_URL="redis://127.0.0.1:1/0") as (base, _):
        assert call(base, "POST", PATH, {"instances": ["1", "2", "3"]}, tenant_a.raw_key)[0] == 200
        status, answer, _ = call(base, "POST", PATH, {"instances": ["1"]}, tenant_a.raw_key)
        assert status == 429 and "3 predictions per minute" in answer["error"]
