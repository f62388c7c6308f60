"""The rule for names that appear in URLs and object keys: model names and alias names.

Lower-case letters, digits, ``_`` and ``-``, starting with a letter or digit, at most 63 characters, so a name is
safe in a URL path segment, an S3 key and a TensorFlow Serving model name. Written once here; the API's URL
patterns, the job submission check, the serving router and the dashboard's forms all use it.
"""

from __future__ import annotations

import re

MODEL_NAME_PATTERN = r"[a-z0-9][a-z0-9_-]{0,62}"
MODEL_NAME_RE = re.compile(rf"^{MODEL_NAME_PATTERN}\Z")
MODEL_NAME_MAX_LENGTH = 63
# Aliases ("production", "staging", ...) follow the same rule: they share the URL segment after a model's name.
ALIAS_NAME_PATTERN = MODEL_NAME_PATTERN
ALIAS_NAME_RE = MODEL_NAME_RE


def is_model_name(name: str) -> bool:
    return bool(MODEL_NAME_RE.match(name or ""))
