"""A strict Content-Security-Policy on every dashboard page.

The pages load only their own stylesheet and script (no inline script, no
inline event handler, nothing from another origin), so the policy can
forbid everything else; an injected ``<script>`` would not run. Style
attributes stay allowed for the bars and shaded cells the templates draw.
"""

from __future__ import annotations

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class DashboardSecurityHeadersMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        if match is not None and match.namespace == "dashboard":
            response.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
            response.setdefault("Cache-Control", "private, no-cache")
        return response
