"""The model card of a version (``GET /api/v1/models/<name>/versions/<n>/card``): JSON and Markdown."""

from __future__ import annotations

import re

import pytest
from markdown_it import MarkdownIt

from datasets.models import Dataset
from serving.cards import md
from serving.models import ModelVersion
from tenants.models import Role
from tests.conftest import client_for
from tests.support.cards import EXPLANATION, HOSTILE, PRIVACY, explained_version, old_version, pii_dataset
from tests.support.factories import make_key

pytestmark = pytest.mark.django_db
CARD = "/api/v1/models/{}/versions/{}/card"
LINKS = "see https://evil.example/a?b=1 or http://evil.example, www.evil.example, WWW.Evil.example, me@evil.example"
# What GFM turns into a link without any markup (its "extended autolinks"): "http(s)://", "www.", e-mail addresses.
GFM_AUTOLINK = re.compile(r"https?://|www\.|[A-Za-z0-9._+-]@[A-Za-z0-9-]|//[A-Za-z0-9]", re.IGNORECASE)


def test_a_card_has_lineage_params_metrics_privacy_and_explanations(api_a, tenant_a):
    version = explained_version(tenant_a.tenant)
    dataset = version.dataset
    answer = api_a.get(CARD.format("ctr", 1))
    assert answer.status_code == 200, answer.content
    card = answer.json()
    assert (card["model"], card["version"], card["status"]) == ("ctr", 1, "ready")
    assert card["published_at"] and card["job"] == {
        "id": str(version.job_id),
        "status": version.job.status,
        "finished_at": None,
        "deleted": False,
    }
    assert card["data"]["dataset"] == {
        "id": str(dataset.pk),
        "name": dataset.name,
        "version": dataset.version,
        "sha256": dataset.sha256,
        "row_count": dataset.row_count,
        "format": "csv",
        "deleted": False,
    }
    assert card["data"]["feature_columns"] == ["item_sequence"] and card["data"]["label_names"] == ["0", "1"]
    assert card["data"]["label_column"] == "clicked" and card["data"]["validation_split"] == 0.2
    assert card["data"]["pii"]["columns"] == [] and "No column" in card["data"]["pii"]["statement"]
    assert card["template"] == {
        "name": "sequence_ctr",
        "task": "binary",
        "input_kind": "id_sequence",
        "params": {"epochs": 3, "batch_size": 256, "max_len": 8},
    }
    assert card["metrics"] == {"auc": 0.71, "examples": 8}
    assert card["privacy"]["differentially_private"] is True and card["privacy"]["statement"] == PRIVACY
    assert "(2.38, 1e-05)-DP for one row of the dataset" in card["privacy"]["summary"]
    assert card["explanation"] == EXPLANATION
    top = card["global_explanations"]["top"]
    assert [t["feature"] for t in top] == ["12", "85", "3"] and top[0]["mean_abs_attribution"] == 0.05
    assert card["runtime"]["runtime"] == "tensorflow" and card["absent"] == []


def test_an_old_version_shows_its_missing_pieces_as_absent(api_a, tenant_a):
    old_version(tenant_a.tenant)
    answer = api_a.get(CARD.format("old", 1))
    assert answer.status_code == 200, answer.content
    card = answer.json()
    assert card["privacy"] == {
        "differentially_private": False,
        "summary": "Not trained with differential privacy.",
        "statement": None,
    }
    assert card["explanation"] is None and card["global_explanations"] is None and card["job"] is None
    assert card["data"]["dataset"]["deleted"] is True and card["data"]["dataset"]["row_count"] is None
    assert card["data"]["dataset"]["name"] == "gone" and card["data"]["pii"] is None
    assert set(card["absent"]) == {
        "job",
        "template.params",
        "data.label_names",
        "data.pii",
        "explanation",
        "global_explanations",
    }
    ModelVersion.objects.filter(model__name="old").update(manifest={"privacy": {}, "explanation": "garbage"})
    card = api_a.get(CARD.format("old", 1)).json()
    assert card["privacy"]["differentially_private"] is False and card["explanation"] is None
    assert card["data"]["dataset"] is None and card["template"]["task"] == "binary"  # from its template
    text = api_a.get(CARD.format("old", 1), {"format": "markdown"}).content.decode()
    assert "Not trained with differential privacy" in text and "Method: absent" in text
    assert "Global explanations: absent" in text and "the dataset row no longer exists" in text


def test_pii_columns_and_how_the_version_treats_them(api_a, tenant_a):
    from datasets import services as dataset_services

    hashed = pii_dataset(tenant_a.tenant, mode="hash")
    dataset_services.validate_dataset(dataset_id=hashed.id)
    version = explained_version(tenant_a.tenant, name="hashed", dataset=hashed)
    manifest = version.manifest | {"feature_columns": ["item_sequence", "email"]}
    ModelVersion.objects.filter(pk=version.pk).update(manifest=manifest)
    pii = api_a.get(CARD.format("hashed", 1)).json()["data"]["pii"]
    assert pii["mode"] == "hash" and [c["column"] for c in pii["columns"]] == ["email"]
    assert pii["columns"][0]["in_features"] is True and "hashed values" in pii["columns"][0]["effect"]
    assert "keyed hash" in pii["columns"][0]["handling"] and "1 column(s) tagged PII" in pii["statement"]

    dropped = pii_dataset(tenant_a.tenant, mode="drop")
    explained_version(tenant_a.tenant, name="dropped", dataset=dropped)
    pii = api_a.get(CARD.format("dropped", 1)).json()["data"]["pii"]
    assert pii["mode"] == "drop" and pii["columns"][0]["in_features"] is False
    assert "dropped before the file was stored" in pii["columns"][0]["handling"]


def _rendered(text: str) -> str:
    return MarkdownIt("commonmark", {"html": True}).enable("table").render(text)


def test_markdown_escapes_everything_that_comes_from_tenants(api_a, tenant_a):
    version = explained_version(tenant_a.tenant, features=[HOSTILE, "<img src=x onerror=alert(1)>", "ok"])
    Dataset.objects.filter(pk=version.dataset_id).update(name=HOSTILE, column_tags={HOSTILE: "pii"})
    manifest = version.manifest | {
        "label_names": [HOSTILE, "| cell |", LINKS],
        "feature_columns": [HOSTILE],
        "params": {HOSTILE: HOSTILE, "link": LINKS},
        "dataset": version.manifest["dataset"] | {"sha256": HOSTILE},
    }
    ModelVersion.objects.filter(pk=version.pk).update(manifest=manifest)
    for answer in (
        api_a.get(CARD.format("ctr", 1), {"format": "markdown"}),
        api_a.get(CARD.format("ctr", 1), HTTP_ACCEPT="text/markdown"),
    ):
        assert answer.status_code == 200 and answer["Content-Type"] == "text/markdown; charset=utf-8"
        text = answer.content.decode()
        assert text.startswith("# Model card: ctr v1\n")
        html = _rendered(text)
        for forbidden in ("<script", "<img", "<a ", "href=", "<em>", "<code>c</code>"):
            assert forbidden not in html, forbidden
        headings = [line for line in text.splitlines() if line.startswith("#")]
        assert html.count("<h1>") == 1 and html.count("<h2>") + html.count("<h3>") == len(headings) - 1
        assert not any("injected" in line for line in headings)
        # Table rows keep their cell count: a hostile "|" does not add a cell.
        for line in text.splitlines():
            if line.startswith("| ") and "Feature columns" in line:
                assert line.count(" | ") == 1
        assert "&lt;script&gt;alert" in text and "x\\](javascript:alert(1))" in text
        # Bare URLs, "www." and addresses read as they are, but none of GFM's autolink triggers is left in them.
        assert text.count(md(LINKS)) == 2 and "https\\:\\/\\/evil.example/a?b=1" in text
        assert not GFM_AUTOLINK.search(md(LINKS)), md(LINKS)
        assert html.count(LINKS) == 2  # the reader sees the text unchanged
    # JSON keeps the values as they are (it is data, not a document).
    card = api_a.get(CARD.format("ctr", 1)).json()
    assert card["data"]["dataset"]["name"] == HOSTILE and card["data"]["label_names"][0] == HOSTILE


def test_another_tenants_card_is_404_and_unknown_query_fields_are_400(api_a, api_b, tenant_a, tenant_b):
    explained_version(tenant_a.tenant)
    for query in ({}, {"format": "markdown"}):
        refused = api_b.get(CARD.format("ctr", 1), query)
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
    assert api_a.get(CARD.format("ctr", 2)).status_code == 404
    assert api_a.get(CARD.format("nope", 1)).status_code == 404
    ModelVersion.objects.filter(model__name="ctr").update(status="publishing")  # not visible yet
    assert api_a.get(CARD.format("ctr", 1)).status_code == 404
    ModelVersion.objects.filter(model__name="ctr").update(status="archived")  # still has a card
    assert api_a.get(CARD.format("ctr", 1)).status_code == 200
    bad = api_a.get(CARD.format("ctr", 1), {"format": "pdf"})
    assert bad.status_code == 400 and bad["Content-Type"] == "application/json"
    assert api_a.get(CARD.format("ctr", 1), {"colour": "red"}).status_code == 400


def test_the_card_needs_the_read_scope(tenant_a):
    explained_version(tenant_a.tenant)
    predict_only = client_for(make_key(tenant_a.tenant, scopes=("predict",)).raw_key)
    refused = predict_only.get(CARD.format("ctr", 1))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "missing_scope"
    viewer_key = make_key(tenant_a.tenant, scopes=("read",), role=Role.VIEWER).raw_key
    assert client_for(viewer_key).get(CARD.format("ctr", 1)).status_code == 200
    assert client_for(None).get(CARD.format("ctr", 1)).status_code in (401, 403)


@pytest.mark.django_db(transaction=True)
def test_the_sdk_and_the_cli_read_the_card(live_server, tenant_a, tenant_b, tmp_path):
    from mlplatform_client import Client, NotFoundError

    from tests.support.clients import Stack, cli_env, mlp, mlp_json
    from tests.support.workers import ROOT

    explained_version(tenant_a.tenant)
    client = Client(api_url=live_server.url, api_key=tenant_a.raw_key, serving_url=live_server.url)
    card = client.model_card("ctr", 1)
    assert card["privacy"]["statement"] == PRIVACY and card["explanation"] == EXPLANATION
    assert client.models.card("ctr", 1, markdown=True).startswith("# Model card: ctr v1\n")
    with pytest.raises(NotFoundError):
        Client(api_url=live_server.url, api_key=tenant_b.raw_key).model_card("ctr", 1)

    stack = Stack(api_url=live_server.url, serving_url=live_server.url)
    # This checkout's client (the shared virtualenv's editable install may point at another checkout).
    path = {"PYTHONPATH": str(ROOT / "clients" / "python")}
    env = cli_env(stack, tenant_a.raw_key, tmp_path / "home", **path)
    assert mlp_json("models", "card", "ctr", "1", env=env)["global_explanations"]["top"][0]["feature"] == "12"
    text = mlp("models", "card", "ctr", "1", "--markdown", env=env).stdout
    assert text.startswith("# Model card: ctr v1\n") and "## Privacy" in text
    assert mlp("models", "card", "ctr", "1", env=cli_env(stack, tenant_b.raw_key, tmp_path / "b", **path), expect=4)
