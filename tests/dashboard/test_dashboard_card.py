"""The version page's model card, global explanations and "explain an input" form.

The form reaches the serving process's ``:explain`` through ``SERVING_URL`` with the signed-in member's token,
the same call the "try it" box makes for ``:predict`` (``dashboard.views.models.serving_post``). The first test
trains a tiny model with the real trainer and explains through the real serving app, as the try-it tests do.
The others, which need answers the real app does not give (a feature model without training one, unreadable
answers, a 5xx), put a stand-in at ``SERVING_URL`` that answers in the contract's shape (issue 17) and records
what the page sent; the rows they read are real.
"""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.test import override_settings
from django.urls import reverse

from datasets.models import Dataset
from serving import tokens
from serving.models import ModelVersion, RegisteredModel
from tenants.models import Role
from tests.support.cards import HOSTILE, explained_version, old_version, tabular_version
from tests.support.dashboard import signed_in, stand_in_serving
from tests.support.factories import make_member
from tests.support.workers import free_port

pytestmark = pytest.mark.django_db(transaction=True)


def sequence_answer(tokens_and_values: list[tuple[str, float]]) -> dict:
    """``:explain``'s answer for one id sequence (contract of issue 17: KServe v1 shape, Vertex attributions)."""
    items = [{"position": i, "token": t, "attribution": a} for i, (t, a) in enumerate(tokens_and_values)]
    total = sum(a for _, a in tokens_and_values)
    return {
        "predictions": [{"probability": 0.62}],
        "explanations": [
            {
                "attributions": [
                    {
                        "output_name": "probability",
                        "output_index": 0,
                        "output_display_name": "1",
                        "baseline_output_value": 0.5,
                        "instance_output_value": 0.62,
                        "feature_attributions": {"item_sequence": items},
                        "approximation_error": abs(total - 0.12),
                    }
                ]
            }
        ],
    }


def version_url(name: str, version: int = 1) -> str:
    return reverse("dashboard:version", kwargs={"name": name, "version": version})


def test_a_trained_versions_card_and_explanations_through_the_real_serving_process(api_a, tenant_a, tenant_b):
    from tests.support.jobs import TINY_CTR, ready_dataset, sample_csv, submit_job
    from tests.support.serving import publish_model, serving_server
    from training.models import TrainingJob
    from training.trainer.run import run_job

    content = sample_csv("ctr", 200)
    dataset_id = ready_dataset(api_a, content, label="clicked", name="clicks")
    submitted = submit_job(api_a, dataset_id, model_name="ctr", params=TINY_CTR).json()
    run_job(job_id=submitted["id"], worker="test-worker")
    job = TrainingJob.objects.get(pk=submitted["id"])
    assert job.status == "succeeded", job.error_traceback[-3000:]
    card = api_a.get("/api/v1/models/ctr/versions/1/card").json()
    assert card["job"]["id"] == str(job.pk) and card["data"]["dataset"]["id"] == dataset_id
    assert card["explanation"]["signature"] == "explain" and card["global_explanations"]["top"]
    assert card["privacy"]["differentially_private"] is False and card["absent"] == []
    publish_model(tenant_a.tenant, name="before-explanations")  # no explain signature

    ids = next(csv.DictReader(io.StringIO(content)))["item_sequence"]  # the first row's item ids
    owner, member = signed_in(tenant_a.owner), signed_in(make_member(tenant_a.tenant).user)
    with serving_server() as (base, _app), override_settings(SERVING_URL=base):
        page = member.post(version_url("ctr"), {"input": ids})
        refused = owner.post(version_url("before-explanations"), {"input": "1 2"})
        stranger = signed_in(tenant_b.owner).post(version_url("ctr"), {"input": ids})
    assert page.status_code == 200, page.content[page.content.find(b"messages") : page.content.find(b"messages") + 600]
    html = page.content.decode()
    first_rank = card["global_explanations"]["top"][0]["feature"]
    assert f'data-rank="1"><td class="num">1</td><td class="mono">{first_rank}</td>' in html
    tokens_shown = html[html.index('id="explained-tokens"') : html.index('id="explained-rows"')]
    assert tokens_shown.count('<span class="token') == len(ids.split()[-TINY_CTR["max_len"] :])
    error = float(html.split("approximation error ")[1].split(".<")[0].rstrip("."))
    assert 0 <= error <= 0.05
    assert refused.status_code == 409 and b"explanations_unavailable" in refused.content
    assert stranger.status_code == 404


def test_the_version_page_shows_the_card_and_the_ranked_global_explanations(tenant_a):
    version = explained_version(tenant_a.tenant)
    owner = signed_in(tenant_a.owner)
    page = owner.get(version_url("ctr"))
    assert page.status_code == 200
    html = page.content.decode()
    assert version.dataset.sha256 in html and f">{version.dataset.row_count}<" in html
    assert "(2.38, 1e-05)-DP for one row of the dataset" in html and "PLD (dp-accounting 0.6.0)" in html
    assert "integrated_gradients, 50 steps (trapezoidal rule)" in html
    assert "No column of the dataset was tagged PII" in html
    ranks = [html.index(f'data-rank="{n}"') for n in (1, 2, 3)]
    assert ranks == sorted(ranks) and html.index('<td class="mono">12</td>') < html.index('<td class="mono">85</td>')
    assert 'style="width: 100.0%"' in html and 'style="width: 50.0%"' in html
    # The page links the card's Markdown form, which the same session reads from the API.
    markdown = reverse("model-version-card", kwargs={"model_name": "ctr", "version": 1}) + "?format=markdown"
    assert markdown in html
    assert owner.get(markdown).content.decode().startswith("# Model card: ctr v1\n")
    # The model page shows its latest version's global explanations.
    model_page = owner.get(reverse("dashboard:model", args=["ctr"])).content.decode()
    assert 'id="model-global-explanations"' in model_page and 'data-rank="3"' in model_page


def test_an_old_versions_page_says_what_it_lacks(tenant_a):
    old_version(tenant_a.tenant)
    owner = signed_in(tenant_a.owner)
    html = owner.get(version_url("old")).content.decode()
    assert "Not trained with differential privacy." in html
    assert 'id="explanation-absent"' in html and 'id="global-explanations-absent"' in html
    assert "the dataset row no longer exists" in html and "gone v4 (deleted)" in html
    assert 'id="explain-form"' not in html  # no explain signature: nothing to ask serving for
    assert 'id="model-global-explanations"' in owner.get(reverse("dashboard:model", args=["old"])).content.decode()


def test_tenants_strings_are_escaped_on_the_page(tenant_a):
    version = explained_version(tenant_a.tenant, features=[HOSTILE, "ok"])
    Dataset.objects.filter(pk=version.dataset_id).update(name=HOSTILE, column_tags={HOSTILE: "pii"})
    manifest = version.manifest | {"label_names": [HOSTILE, "1"], "params": {HOSTILE: HOSTILE}}
    ModelVersion.objects.filter(pk=version.pk).update(manifest=manifest)
    html = signed_in(tenant_a.owner).get(version_url("ctr")).content.decode()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_another_tenants_version_page_and_explain_form_are_404(tenant_a, tenant_b):
    explained_version(tenant_a.tenant)
    stranger = signed_in(tenant_b.owner)
    with stand_in_serving(200, sequence_answer([("12", 0.1)])) as (base, calls), override_settings(SERVING_URL=base):
        assert stranger.get(version_url("ctr")).status_code == 404
        assert stranger.post(version_url("ctr"), {"input": "12 85"}).status_code == 404
        assert stranger.get(reverse("dashboard:model", args=["ctr"])).status_code == 404
    assert calls == []  # nothing reached serving


def test_the_form_explains_an_id_sequence_through_serving_as_the_member(tenant_a):
    explained_version(tenant_a.tenant)
    member = make_member(tenant_a.tenant, role=Role.MEMBER)
    answer = sequence_answer([("12", 0.09), ("85", -0.03), ("3", 0.0), (HOSTILE, 0.06)])
    with stand_in_serving(200, answer) as (base, calls), override_settings(SERVING_URL=base):
        page = signed_in(member.user).post(version_url("ctr"), {"input": "12 85 3"})
    assert page.status_code == 200, page.content[:800]
    (call,) = calls
    assert call.path == "/v1/models/ctr/versions/1:explain"
    assert json.loads(call.body) == {"instances": ["12 85 3"]}
    grant = tokens.grant_for_token(raw=call.authorization.removeprefix("Bearer "))
    assert grant is not None and grant.tenant_id == str(tenant_a.tenant.pk)
    html = page.content.decode()
    assert 'id="explained-tokens"' in html and 'id="explained-output">1<' in html
    assert '<span class="token positive" style="--weight: 1.0000"' in html
    assert '<span class="token negative" style="--weight: 0.3333"' in html
    assert '<span class="token zero" style="--weight: 0.0000"' in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert 'value="12 85 3"' in html  # the typed input stays in the form


def test_the_form_sends_typed_columns_and_draws_feature_bars(tenant_a):
    tabular_version(tenant_a.tenant)
    owner = signed_in(tenant_a.owner)
    form = owner.get(version_url("churn")).content.decode()
    assert 'name="feature_0"' in form and 'name="feature_1"' in form and 'inputmode="decimal"' in form
    answer = sequence_answer([])
    attribution = answer["explanations"][0]["attributions"][0]
    attribution["feature_attributions"] = {"age": -0.02, "city": 0.08}
    with stand_in_serving(200, answer) as (base, calls), override_settings(SERVING_URL=base):
        page = owner.post(version_url("churn"), {"feature_0": " 35 ", "feature_1": "oslo"})
        refused = owner.post(version_url("churn"), {"feature_0": "thirty", "feature_1": "oslo"})
    assert page.status_code == 200, page.content[:800]
    assert json.loads(calls[0].body) == {"instances": [{"age": 35.0, "city": "oslo"}]}
    html = page.content.decode()
    assert (
        'class="fill negative" style="width: 25.0%"' in html and 'class="fill positive" style="width: 100.0%"' in html
    )
    assert refused.status_code == 400 and b"age is a number" in refused.content and len(calls) == 1


def test_serving_refusals_and_unreadable_answers_are_shown_not_500(tenant_a):
    explained_version(tenant_a.tenant)
    owner = signed_in(tenant_a.owner)
    refusal = {"error": "rate_limited: too many explanations <b>"}  # serving's own error body
    with stand_in_serving(429, refusal) as (base, _), override_settings(SERVING_URL=base):
        page = owner.post(version_url("ctr"), {"input": "12"})
    assert page.status_code == 429 and b"too many explanations &lt;b&gt;" in page.content
    not_a_number = sequence_answer([("12", 0.1)])
    not_a_number["explanations"][0]["attributions"][0]["feature_attributions"]["item_sequence"][0]["attribution"] = "x"
    for broken in (b"not json", {"predictions": []}, not_a_number, {"explanations": [{}]}, [1]):
        with stand_in_serving(200, broken) as (base, _), override_settings(SERVING_URL=base):
            page = owner.post(version_url("ctr"), {"input": "12"})
        assert page.status_code == 502 and b"cannot read" in page.content, broken
    with stand_in_serving(500, b"oops") as (base, _), override_settings(SERVING_URL=base):
        assert owner.post(version_url("ctr"), {"input": "12"}).status_code == 502
    with override_settings(SERVING_URL=f"http://127.0.0.1:{free_port()}"):
        down = owner.post(version_url("ctr"), {"input": "12"})
    assert down.status_code == 502 and b"did not answer" in down.content
    with stand_in_serving(200, sequence_answer([("12", 0.1)])) as (base, calls), override_settings(SERVING_URL=base):
        too_big = owner.post(version_url("ctr"), {"input": "1 " * 40_000})
    assert too_big.status_code in (200, 413) and all(len(c.body) <= 64 * 1024 for c in calls)


def test_an_explanation_waits_longer_for_serving_than_try_it(tenant_a, monkeypatch):
    """A cold explainer imports TensorFlow and loads the model: the form waits EXPLAIN_TIMEOUT_SECONDS (60) for
    serving, try-it's predictions PREDICT_TIMEOUT_SECONDS (10). Scaled down here: serving answering in 1 s is
    waited for by the form and not by try-it."""
    from dashboard.views import models as views

    assert (views.PREDICT_TIMEOUT_SECONDS, views.EXPLAIN_TIMEOUT_SECONDS) == (10, 60)
    monkeypatch.setattr(views, "PREDICT_TIMEOUT_SECONDS", 0.3)
    monkeypatch.setattr(views, "EXPLAIN_TIMEOUT_SECONDS", 5)
    explained_version(tenant_a.tenant)
    owner = signed_in(tenant_a.owner)
    answer = sequence_answer([("12", 0.1)])
    with stand_in_serving(200, answer, delay=1.0) as (base, calls), override_settings(SERVING_URL=base):
        page = owner.post(version_url("ctr"), {"input": "12"})
        assert page.status_code == 200 and b'id="explained-tokens"' in page.content
        tried = owner.post(
            reverse("dashboard:model-try", args=["ctr"]), {"instances": ["12"]}, content_type="application/json"
        )
        assert tried.status_code == 502 and b"did not answer" in tried.content
    assert [call.path.rsplit(":", 1)[1] for call in calls] == ["explain", "predict"]


def test_viewers_see_the_card_but_not_the_form(tenant_a):
    explained_version(tenant_a.tenant)
    viewer = signed_in(make_member(tenant_a.tenant, role=Role.VIEWER).user)
    with stand_in_serving(200, sequence_answer([("12", 0.1)])) as (base, calls), override_settings(SERVING_URL=base):
        html = viewer.get(version_url("ctr")).content.decode()
        assert 'id="card-privacy"' in html and 'id="explain-form"' not in html
        assert viewer.post(version_url("ctr"), {"input": "12"}).status_code == 403
    assert calls == []


def test_a_text_model_takes_a_text_and_colours_its_tokens(tenant_a):
    version = explained_version(tenant_a.tenant, name="reviews")
    manifest = version.manifest | {
        "template": "text_classifier",
        "task": "multiclass",
        "input_kind": "text",
        "feature_columns": ["review"],
        "label_names": ["negative", "positive"],
        "explanation": version.manifest["explanation"] | {"unit": "token"},
    }
    ModelVersion.objects.filter(pk=version.pk).update(manifest=manifest, template="text_classifier")
    owner = signed_in(tenant_a.owner)
    assert '<textarea id="explain-input" name="input"' in owner.get(version_url("reviews")).content.decode()
    answer = sequence_answer([("great", 0.2), ("product", 0.05)])
    attribution = answer["explanations"][0]["attributions"][0]
    attribution |= {"output_name": "probabilities", "output_index": 1, "output_display_name": "positive"}
    attribution["feature_attributions"] = {"review": attribution["feature_attributions"].pop("item_sequence")}
    with stand_in_serving(200, answer) as (base, calls), override_settings(SERVING_URL=base):
        page = owner.post(version_url("reviews"), {"input": "Great product!"})
    assert page.status_code == 200 and json.loads(calls[0].body) == {"instances": ["Great product!"]}
    html = page.content.decode()
    assert 'id="explained-output">positive<' in html and "probabilities of" in html
    assert '<span class="token positive" style="--weight: 0.2500" title="product: 0.05">product</span>' in html


def test_the_model_page_shows_productions_global_explanations(tenant_a):
    from serving import services

    explained_version(tenant_a.tenant, features=["first"])
    second = explained_version(tenant_a.tenant, version=2, features=["second"])
    RegisteredModel.objects.filter(pk=second.model_id).update(last_version=2)
    owner = signed_in(tenant_a.owner)
    assert '<td class="mono">second</td>' in owner.get(reverse("dashboard:model", args=["ctr"])).content.decode()
    services.set_alias(tenant=tenant_a.tenant, model_name="ctr", alias="production", version=1)
    page = owner.get(reverse("dashboard:model", args=["ctr"])).content.decode()
    assert '<td class="mono">first</td>' in page and "What v1 looks at" in page
