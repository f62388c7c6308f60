#!/usr/bin/env python3
"""Write ``mlplatform_client/api_types.py``: TypedDicts and Literal enums for every schema of the OpenAPI document.

The SDK's types come from the API's own schema (drf-spectacular), so a field renamed or added in a serializer shows
up here on the next run, and ``tests/clients/test_sdk_cli.py`` fails while the committed file differs from what the
live schema generates. Also written: ``OPERATIONS``, every ``(METHOD, path template)`` the schema documents, which the
SDK's own route table is checked against.

    python clients/python/scripts/generate_models.py                  # from the repository (manage.py spectacular)
    python clients/python/scripts/generate_models.py --schema URL|FILE # from a running API or a saved document
    python clients/python/scripts/generate_models.py --check           # exit 1 when the committed file differs

Standard library only, so it runs anywhere the schema can be read.
"""

from __future__ import annotations

import argparse
import json
import keyword
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TARGET = HERE.parent / "mlplatform_client" / "api_types.py"
REPOSITORY = HERE.parents[2]
METHODS = ("get", "post", "put", "patch", "delete")
HEADER = '''"""Types of the ML platform API, generated from its OpenAPI schema. Do not edit by hand.

Regenerate with ``python clients/python/scripts/generate_models.py`` after an API change; the test suite fails
while this file differs from what the live schema generates.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

'''


def load_schema(source: str | None) -> dict[str, Any]:
    """The OpenAPI document from a URL, a file, ``-`` (stdin), or by default from ``manage.py spectacular``."""
    if source is None:
        output = subprocess.run(
            [sys.executable, "manage.py", "spectacular", "--format", "openapi-json"],
            cwd=REPOSITORY,
            check=True,
            capture_output=True,
        ).stdout
        return json.loads(output)
    if source == "-":
        return json.load(sys.stdin)
    if source.startswith(("http://", "https://")):
        url = source if "format=" in source else source + ("&" if "?" in source else "?") + "format=json"
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - an address the caller chose
            return json.loads(response.read())
    return json.loads(Path(source).read_text())


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def annotation(schema: dict[str, Any]) -> str:
    """The Python type of one JSON Schema (as drf-spectacular writes them)."""
    if "$ref" in schema:
        text = _ref_name(schema["$ref"])
    elif "allOf" in schema and len(schema["allOf"]) == 1:
        text = annotation(schema["allOf"][0])
    elif "oneOf" in schema or "anyOf" in schema:
        parts = [annotation(s) for s in schema.get("oneOf") or schema["anyOf"]]
        text = " | ".join(dict.fromkeys(parts))
    elif "enum" in schema:
        text = "Literal[" + ", ".join(json.dumps(v) for v in schema["enum"] if v is not None) + "]"
    else:
        kind = schema.get("type")
        if kind == "string":
            text = "bytes" if schema.get("format") == "binary" else "str"
        elif kind == "integer":
            text = "int"
        elif kind == "number":
            text = "float"
        elif kind == "boolean":
            text = "bool"
        elif kind == "array":
            text = f"list[{annotation(schema.get('items') or {})}]"
        elif kind == "object" and "properties" not in schema:
            extra = schema.get("additionalProperties")
            text = f"dict[str, {annotation(extra)}]" if isinstance(extra, dict) and extra else "dict[str, Any]"
        else:
            text = "Any"
    if schema.get("nullable") and text != "Any":
        text += " | None"
    return text


def typed_dict(name: str, schema: dict[str, Any]) -> list[str]:
    properties: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    fields = []
    for field, spec in properties.items():
        kind = annotation(spec)
        fields.append((field, kind if field in required else f"NotRequired[{kind}]"))
    if all(field.isidentifier() and not keyword.iskeyword(field) for field, _ in fields):
        lines = [f"class {name}(TypedDict):"]
        lines += [f"    {field}: {kind}" for field, kind in fields]
        if len(lines) == 1:
            lines.append("    pass")
        return lines
    body = ", ".join(f"{json.dumps(field)}: {kind}" for field, kind in fields)
    return [f"{name} = TypedDict({json.dumps(name)}, {{{body}}})"]


def render(schema: dict[str, Any]) -> str:
    """The module's text: deterministic for one schema (components and paths in sorted order)."""
    components: dict[str, Any] = schema.get("components", {}).get("schemas", {})
    out = [HEADER.rstrip("\n"), ""]
    # Aliases (enums) first: they are evaluated at import, TypedDict annotations are not (postponed).
    dicts = {name for name, spec in components.items() if "properties" in spec or spec.get("type") == "object"}
    for name in sorted(set(components) - dicts):
        out.append(f"{name} = {annotation(components[name])}")
    for name in sorted(dicts):
        out += ["", "", *typed_dict(name, components[name])]
    out.append("")
    operations = sorted(
        (method.upper(), path) for path, ops in schema.get("paths", {}).items() for method in ops if method in METHODS
    )
    out.append("")
    out.append("# Every operation the schema documents: (METHOD, path template).")
    out.append("OPERATIONS: frozenset[tuple[str, str]] = frozenset(")
    out.append("    {")
    out += [f"        ({json.dumps(method)}, {json.dumps(path)})," for method, path in operations]
    out.append("    }")
    out.append(")")
    info = schema.get("info", {})
    out.append(f"API_VERSION = {json.dumps(str(info.get('version', '')).strip())}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schema", help="URL of /api/schema/, a JSON file, or - for stdin (default: manage.py)")
    parser.add_argument("--out", type=Path, default=TARGET)
    parser.add_argument("--check", action="store_true", help="exit 1 when the file differs; write nothing")
    args = parser.parse_args(argv)
    text = render(load_schema(args.schema))
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
