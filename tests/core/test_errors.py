"""Every error of the REST API uses the one envelope."""

import pytest

pytestmark = pytest.mark.django_db


def assert_envelope(response, status: int, code: str | None = None):
    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["message"]
    if code:
        assert error["code"] == code
    return error


def test_unknown_api_url_is_a_json_404(api_a):
    assert_envelope(api_a.get("/api/v1/no-such-thing"), 404, "not_found")


def test_malformed_id_is_404_not_500(api_a):
    assert_envelope(api_a.get("/api/v1/members/not-a-uuid"), 404, "not_found")


def test_malformed_json_is_400(api_a):
    response = api_a.generic("POST", "/api/v1/members", "{not json", content_type="application/json")
    assert_envelope(response, 400, "parse_error")


def test_json_that_is_not_an_object_is_400(api_a):
    response = api_a.generic("POST", "/api/v1/members", "[1, 2]", content_type="application/json")
    assert_envelope(response, 400, "validation_error")


def test_wrong_content_type_is_415(api_a):
    response = api_a.generic("POST", "/api/v1/members", "email=a@example.com", content_type="text/plain")
    assert_envelope(response, 415, "unsupported_media_type")


def test_method_not_allowed_is_405(api_a):
    assert_envelope(api_a.put("/api/v1/tenant", {}, format="json"), 405, "method_not_allowed")


def test_oversized_body_is_4xx_not_500(api_a):
    body = '{"email": "' + "a" * (3 * 1024 * 1024) + '@example.com"}'
    response = api_a.generic("POST", "/api/v1/members", body, content_type="application/json")
    assert_envelope(response, 413, "payload_too_large")


def test_request_id_is_echoed(api_a):
    response = api_a.get("/api/v1/tenant", HTTP_X_REQUEST_ID="abc-123")
    assert response["X-Request-ID"] == "abc-123"
    generated = api_a.get("/api/v1/tenant", HTTP_X_REQUEST_ID="bad id with spaces")["X-Request-ID"]
    assert generated != "bad id with spaces" and len(generated) == 32
