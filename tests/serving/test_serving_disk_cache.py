"""The serving disk cache stays within its budget: a tenant calling many versions cannot fill the disk."""

from __future__ import annotations

import os
import time

import pytest

from serving import services as registry
from serving.runtime import loader
from tests.support.serving import call, publish_model, serving_server

pytestmark = pytest.mark.django_db(transaction=True)


def _version_dirs(root) -> set[str]:
    return {p.name for p in root.glob("*/*/*") if p.is_dir() and not p.name.startswith(".")}


def test_files_of_unloaded_versions_are_pruned_to_the_disk_budget(tenant_a, tmp_path):
    tenant = tenant_a.tenant
    for seed in (1, 2, 3):
        publish_model(tenant, name="clicks", seed=seed)
    registry.set_alias(tenant=tenant, model_name="clicks", alias="production", version=1)
    body = {"instances": ["1 2 3"]}
    with serving_server(SERVING_CACHE_DIR=tmp_path, SERVING_CACHE_DISK_BUDGET_BYTES=0, SERVING_ROUTE_TTL_SECONDS=0) as (
        base,
        app,
    ):
        status, _, headers = call(base, "POST", "/v1/models/clicks:predict", body, tenant_a.raw_key)
        assert (status, headers["X-Model-Version"]) == (200, "1")
        assert _version_dirs(tmp_path) == {"1"}  # loaded: kept whatever the budget

        for version in (2, 3):
            registry.set_alias(tenant=tenant, model_name="clicks", alias="production", version=version)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                status, _, headers = call(base, "POST", "/v1/models/clicks:predict", body, tenant_a.raw_key)
                loaded = {m.spec.version for m in app.cache.loaded()}
                if headers.get("X-Model-Version") == str(version) and loaded == {version}:
                    break
                time.sleep(0.05)
            assert loaded == {version}
            # The unloaded versions' files went as the new one loaded: only the loaded version is on disk.
            deadline = time.monotonic() + 5
            while _version_dirs(tmp_path) != {str(version)} and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _version_dirs(tmp_path) == {str(version)}

        # A pruned version is fetched and verified again when it is asked for.
        status, _, headers = call(base, "POST", "/v1/models/clicks/versions/1:predict", body, tenant_a.raw_key)
        assert (status, headers["X-Model-Version"]) == (200, "1")


def test_pruning_goes_least_recently_used_first_and_spares_loaded_versions(settings, tmp_path):
    settings.SERVING_CACHE_DIR = tmp_path
    sizes = {("t", "m", 1): 100, ("t", "m", 2): 100, ("t", "m", 3): 100, ("t", "other", 1): 100}
    for age, ((tenant, model, version), size) in enumerate(sizes.items()):
        folder = tmp_path / tenant / model / str(version)
        (folder / "variables").mkdir(parents=True)
        (folder / "variables" / "data").write_bytes(b"x" * size)
        stamp = 1_000_000 + age
        os.utime(folder, (stamp, stamp))
    (tmp_path / "t" / "m" / ".3-staging").mkdir()  # a fetch in progress is never touched

    removed = loader.prune_disk_cache(keep={("t", "m", 1)}, budget_bytes=250)

    assert sorted(p.relative_to(tmp_path).as_posix() for p in removed) == ["t/m/2", "t/m/3"]
    assert (tmp_path / "t" / "m" / "1").is_dir()  # oldest, but loaded
    assert (tmp_path / "t" / "other" / "1").is_dir()  # newest, and the budget is met without it
    assert (tmp_path / "t" / "m" / ".3-staging").is_dir()
