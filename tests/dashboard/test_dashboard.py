"""The web dashboard: every page renders for members, refuses viewers' changes, and keeps tenants apart.

Pages come from the URL configuration (``dashboard.urls``), so a page added
there is checked by the isolation and role tests without editing this file;
a page with a URL keyword the harness cannot fill fails the suite.
"""

from __future__ import annotations

import re

import pytest
from django.urls import URLPattern, reverse

from serving.models import ModelAlias, ModelVersion, RegisteredModel
from tenants import services as tenant_services
from tenants.models import ApiKey, AuditEvent, Membership, Role
from tests.support.dashboard import HTML_PAGES, TENANT_PAGES, signed_in, tenant_objects
from tests.support.factories import make_member
from tests.support.isolation import tenant_rows
from training.models import TrainingJob

pytestmark = pytest.mark.django_db


def page_url(pattern: URLPattern, objects) -> str:
    keywords = tuple(sorted(pattern.pattern.regex.groupindex))
    if not keywords:
        return reverse(f"dashboard:{pattern.name}")
    values = objects.url_kwargs()
    key = "version" if "version" in keywords else keywords[0]
    assert key in values, f"dashboard:{pattern.name} takes {keywords}: teach tests.support.dashboard to fill them"
    kwargs = values[key]
    assert set(kwargs) == set(keywords), f"dashboard:{pattern.name} takes {keywords}"
    return reverse(f"dashboard:{pattern.name}", kwargs=kwargs)


@pytest.fixture
def a_objects(tenant_a):
    return tenant_objects(tenant_a.tenant)


@pytest.mark.parametrize("pattern", HTML_PAGES, ids=lambda p: p.name)
def test_every_page_renders_for_an_owner_and_needs_a_sign_in(pattern, tenant_a, a_objects, client):
    url = page_url(pattern, a_objects)
    anonymous = client.get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("dashboard:login"))
    response = signed_in(tenant_a.owner).get(url)
    assert response.status_code == 200, response.content[:500]
    assert tenant_a.tenant.name.encode() in response.content  # the tenant switcher names the current tenant
    assert not re.search(rb'(src|href)="(https?:)?//', response.content)  # no CDN: scripts and styles are ours


def test_version_page_shows_roc_or_confusion_matrix(tenant_a, a_objects):
    owner = signed_in(tenant_a.owner)
    binary = owner.get(reverse("dashboard:version", kwargs={"name": "ctr", "version": 1}))
    assert b'id="roc-chart"' in binary.content and b'"roc-data"' in binary.content
    classifier = a_objects.classifier
    multi = owner.get(reverse("dashboard:version", kwargs={"name": classifier.model.name, "version": 1}))
    assert b'id="confusion"' in multi.content and b'<td style="--share: 0.8">8</td>' in multi.content


@pytest.mark.parametrize("pattern", [p for p in TENANT_PAGES if p.pattern.regex.groupindex], ids=lambda p: p.name)
def test_another_tenants_objects_are_404_and_nothing_changes(pattern, tenant_a, tenant_b, a_objects):
    url = page_url(pattern, a_objects)
    before = tenant_rows(tenant_a.tenant)
    b_owner = signed_in(tenant_b.owner)
    for method in ("get", "post"):
        data = {"action": "set_alias", "alias": "production", "version": "1"} if method == "post" else None
        response = getattr(b_owner, method)(url, data)
        expected = 404 if method in pattern.callback.view_class.http_method_names else 405
        assert response.status_code == expected, (method, url, response.status_code)
    assert tenant_rows(tenant_a.tenant) == before


@pytest.mark.parametrize("pattern", [p for p in HTML_PAGES if not p.pattern.regex.groupindex], ids=lambda p: p.name)
def test_list_pages_never_show_another_tenants_rows(pattern, tenant_a, tenant_b, a_objects):
    tenant_objects(tenant_b.tenant)
    page = signed_in(tenant_b.owner).get(page_url(pattern, a_objects)).content.decode()
    for secret in (a_objects.dataset.pk, a_objects.job.pk, tenant_a.tenant.name, tenant_a.api_key.prefix):
        assert str(secret) not in page


@pytest.mark.parametrize("pattern", TENANT_PAGES, ids=lambda p: p.name)
def test_a_viewer_reads_but_every_change_is_refused(pattern, tenant_a, a_objects):
    viewer = make_member(tenant_a.tenant, role=Role.VIEWER).user
    client = signed_in(viewer)
    url = page_url(pattern, a_objects)
    if pattern.name != "model-try":
        expected = 403 if pattern.name in {"audit", "webhooks"} else 200  # owners' and admins' pages
        assert client.get(url).status_code == expected
    before = tenant_rows(tenant_a.tenant)
    for data in ({}, {"action": "set_alias", "alias": "production", "version": "1"}, {"action": "revoke"}):
        assert client.post(url, data).status_code in (403, 405)
    assert tenant_rows(tenant_a.tenant) == before


def test_a_viewer_sees_no_changing_controls(tenant_a, a_objects):
    viewer = signed_in(make_member(tenant_a.tenant, role=Role.VIEWER).user)
    pages = {
        "datasets": (reverse("dashboard:datasets"), [b'id="upload-form"']),
        "dataset": (reverse("dashboard:dataset", args=[a_objects.dataset.pk]), [b"Delete", b"Train a model"]),
        "jobs": (reverse("dashboard:jobs"), [b'id="new-job"']),
        "job": (reverse("dashboard:job", args=[a_objects.job.pk]), [b'id="cancel-job"']),
        "model": (reverse("dashboard:model", args=["ctr"]), [b"Promote", b'id="traffic-form"', b'id="try-form"']),
        "keys": (reverse("dashboard:api-keys"), [b'id="key-form"', b"Revoke"]),
        "members": (reverse("dashboard:members"), [b'id="member-form"', b"Remove"]),
    }
    owner = signed_in(tenant_a.owner)
    for name, (url, controls) in pages.items():
        seen_by_owner, seen_by_viewer = owner.get(url).content, viewer.get(url).content
        for control in controls:
            assert control in seen_by_owner, (name, control)
            assert control not in seen_by_viewer, (name, control)


def test_suspension_takes_effect_on_the_next_page(tenant_a, a_objects):
    owner = signed_in(tenant_a.owner)
    assert owner.get(reverse("dashboard:overview")).status_code == 200
    tenant_services.set_tenant_status(tenant=tenant_a.tenant, status="suspended")
    refused = owner.get(reverse("dashboard:jobs"))
    assert refused.status_code == 403 and b"suspended" in refused.content


def test_switching_tenants_only_to_ones_the_person_belongs_to(tenant_a, tenant_b, a_objects):
    person = make_member(tenant_b.tenant, role=Role.MEMBER, email=tenant_a.owner.email).user
    client = signed_in(person, tenant_a.tenant)
    assert tenant_a.tenant.name.encode() in client.get(reverse("dashboard:overview")).content
    client.post(reverse("dashboard:switch-tenant"), {"tenant": tenant_b.tenant.slug})
    page = client.get(reverse("dashboard:jobs")).content
    assert str(a_objects.job.pk).encode() not in page and b'role">member' in page
    # The REST API follows the same session tenant, so the page's scripts see what the page shows.
    assert client.get("/api/v1/tenant").json()["tenant"]["slug"] == tenant_b.tenant.slug
    stranger = signed_in(make_member(tenant_b.tenant).user)
    stranger.post(reverse("dashboard:switch-tenant"), {"tenant": tenant_a.tenant.slug})
    assert tenant_a.tenant.name.encode() not in stranger.get(reverse("dashboard:overview")).content


def _audited(tenant, action: str, user) -> AuditEvent:
    event = AuditEvent.objects.for_tenant(tenant).filter(action=action).first()
    assert event is not None, action
    assert (event.actor_kind, event.actor_user_id) == ("user", user.pk)
    return event


def test_job_form_from_the_template_schema_starts_and_cancels_a_job(tenant_a, a_objects):
    owner = signed_in(tenant_a.owner)
    url = reverse("dashboard:job-new")
    form_page = owner.get(url, {"template": "sequence_ctr", "dataset": a_objects.dataset.pk}).content.decode()
    for param in ("param_epochs", "param_lstm_units", "param_embedding_dim", "param_mixed_precision"):
        assert f'name="{param}"' in form_page
    fields = {"template": "sequence_ctr", "dataset": a_objects.dataset.pk, "model_name": "ctr2"}
    fields |= {"label_column": "clicked", "validation_split": "0.2", "seed": "0", "param_epochs": "1"}
    fields |= {"param_batch_size": "8", "param_learning_rate": "0.001", "param_max_len": "8", "param_vocab_size": "0"}
    fields |= {"param_embedding_dim": "8", "param_conv_filters": "4", "param_conv_kernel": "3", "param_pool_size": "2"}
    fields |= {"param_lstm_units": "4"}
    bad = owner.post(url, fields | {"param_epochs": "100000"})
    assert bad.status_code == 400 and not TrainingJob.objects.filter(model_name="ctr2").exists()
    created = owner.post(url, fields)
    assert created.status_code == 302, created.content[:800]
    job = TrainingJob.objects.get(model_name="ctr2")
    assert job.params["epochs"] == 1 and job.params["lstm_units"] == 4
    _audited(tenant_a.tenant, "job.create", tenant_a.owner)
    assert owner.post(reverse("dashboard:job", args=[job.pk])).status_code == 302
    job.refresh_from_db()
    assert job.status == TrainingJob.Status.CANCELLED
    _audited(tenant_a.tenant, "job.cancel", tenant_a.owner)
    again = owner.post(reverse("dashboard:job", args=[job.pk]))
    assert again.status_code == 409 and b"already ended" in again.content


def test_alias_moves_rollback_traffic_and_archive(tenant_a, a_objects):
    from tests.support.factories import make_model_version

    make_model_version(tenant_a.tenant, name="ctr", version=2)
    RegisteredModel.objects.filter(tenant=tenant_a.tenant, name="ctr").update(last_version=2)
    owner = signed_in(tenant_a.owner)
    url = reverse("dashboard:model", args=["ctr"])
    assert owner.post(url, {"action": "set_alias", "alias": "production", "version": "1"}).status_code == 302
    assert "Roll production back" not in owner.get(url).content.decode()  # it never pointed anywhere else
    assert owner.post(url, {"action": "set_alias", "alias": "production", "version": "2"}).status_code == 302
    page = owner.get(url).content.decode()
    assert "production → v2" in page and "Roll production back to v1" in page
    assert owner.post(url, {"action": "rollback"}).status_code == 302
    assert ModelAlias.objects.get(model__name="ctr", name="production").version.version == 1
    assert owner.post(url, {"action": "traffic", "weight_1": "90", "weight_2": "10"}).status_code == 302
    assert RegisteredModel.objects.get(tenant=tenant_a.tenant, name="ctr").traffic == {"1": 90, "2": 10}
    bad = owner.post(url, {"action": "traffic", "weight_1": "90", "weight_2": "20"})
    assert bad.status_code == 400 and b"sum to 100" in bad.content
    in_use = owner.post(url, {"action": "archive", "version": "1"})
    assert in_use.status_code == 409
    owner.post(url, {"action": "traffic"})
    owner.post(url, {"action": "delete_alias", "alias": "production"})
    assert owner.post(url, {"action": "archive", "version": "1"}).status_code == 302
    assert ModelVersion.objects.get(model__name="ctr", version=1).status == "archived"
    for action in ("model.alias_set", "model.traffic_set", "model.alias_deleted", "model.version_archived"):
        _audited(tenant_a.tenant, action, tenant_a.owner)
    assert owner.post(url, {"action": "set_alias", "alias": "BAD NAME", "version": "1"}).status_code == 400
    assert owner.post(url, {"action": "nonsense"}).status_code == 400


def test_api_keys_are_shown_once_and_revoked(tenant_a, a_objects):
    owner = signed_in(tenant_a.owner)
    url = reverse("dashboard:api-keys")
    created = owner.post(url, {"action": "create", "name": "ci", "scopes": ["read", "predict"], "role": "member"})
    assert created.status_code == 201 and created["Cache-Control"] == "no-store"
    key = ApiKey.objects.for_tenant(tenant_a.tenant).get(name="ci")
    secret = created.context["created"].raw_key
    assert secret.encode() in created.content and secret.encode() not in owner.get(url).content
    _audited(tenant_a.tenant, "api_key.create", tenant_a.owner)
    assert owner.post(url, {"action": "revoke", "key": key.pk}).status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None
    _audited(tenant_a.tenant, "api_key.revoke", tenant_a.owner)
    assert owner.post(url, {"action": "revoke", "key": "not-an-id"}).status_code == 404
    assert owner.post(url, {"action": "create", "name": "x", "scopes": ["root"], "role": "member"}).status_code == 400


def test_members_are_added_changed_and_removed_by_admins(tenant_a, a_objects):
    owner = signed_in(tenant_a.owner)
    url = reverse("dashboard:members")
    assert owner.post(url, {"action": "add", "email": "new@example.com", "role": "viewer"}).status_code == 302
    member = Membership.objects.for_tenant(tenant_a.tenant).get(user__email="new@example.com")
    assert owner.post(url, {"action": "role", "member": member.pk, "role": "admin"}).status_code == 302
    member.refresh_from_db()
    assert member.role == "admin"
    last_owner = Membership.objects.for_tenant(tenant_a.tenant).get(role="owner")
    refused = owner.post(url, {"action": "role", "member": last_owner.pk, "role": "viewer"})
    assert refused.status_code == 409 and b"at least one owner" in refused.content
    assert owner.post(url, {"action": "remove", "member": member.pk}).status_code == 302
    for action in ("member.add", "member.role", "member.remove"):
        _audited(tenant_a.tenant, action, tenant_a.owner)
    plain_member = signed_in(make_member(tenant_a.tenant, role=Role.MEMBER).user)
    assert plain_member.post(url, {"action": "add", "email": "x@example.com", "role": "viewer"}).status_code == 403


def test_deleting_a_dataset_from_its_page(tenant_a):
    from tests.support.factories import make_dataset

    dataset = make_dataset(tenant_a.tenant, name="old")
    owner = signed_in(tenant_a.owner)
    assert owner.post(reverse("dashboard:dataset", args=[dataset.pk])).status_code == 302
    assert not tenant_rows(tenant_a.tenant).get(("datasets.Dataset", str(dataset.pk)))
    _audited(tenant_a.tenant, "dataset.delete", tenant_a.owner)


def test_usage_page_takes_any_month_and_bad_months_fall_back(tenant_a, a_objects):
    owner = signed_in(tenant_a.owner)
    for month in ("2026-02", "1999-13", "garbage", "99999-01", ""):
        response = owner.get(reverse("dashboard:usage"), {"month": month})
        assert response.status_code == 200
    assert b"February 2026" in owner.get(reverse("dashboard:usage"), {"month": "2026-02"}).content


def test_unknown_and_malformed_ids_are_404_not_500(tenant_a, a_objects):
    owner = signed_in(tenant_a.owner)
    for url in (
        "/datasets/not-a-uuid/",
        "/jobs/00000000-0000-0000-0000-000000000000/",
        "/models/nope/",
        "/models/ctr/versions/999/",
        "/models/ctr/versions/99999999999999999999/",
    ):
        assert owner.get(url).status_code == 404, url


def test_a_version_downloads_and_the_model_exports_from_its_pages(tenant_a):
    import io
    import tarfile

    from tests.support.serving import publish_model

    publish_model(tenant_a.tenant, name="clicks")
    viewer = signed_in(make_member(tenant_a.tenant, role=Role.VIEWER).user)  # reading is enough
    page = viewer.get(reverse("dashboard:version", kwargs={"name": "clicks", "version": 1})).content.decode()
    assert reverse("dashboard:version-download", kwargs={"name": "clicks", "version": 1}) in page
    response = viewer.get(reverse("dashboard:version-download", kwargs={"name": "clicks", "version": 1}))
    assert response.status_code == 200 and response["Content-Disposition"].endswith('"clicks-1.tar.gz"')
    with tarfile.open(fileobj=io.BytesIO(b"".join(response.streaming_content)), mode="r:gz") as archive:
        assert "clicks/1/saved_model.pb" in archive.getnames()

    export = reverse("dashboard:model-export", kwargs={"name": "clicks"})
    assert export in viewer.get(reverse("dashboard:model", kwargs={"name": "clicks"})).content.decode()
    assert b"model_config_list {" in viewer.get(export + "?engine=tf-serving").content
    assert b"kind: InferenceService" in viewer.get(export + "?engine=kserve").content
    assert viewer.get(export + "?engine=onnx").status_code == 400
