"""Checking API answers against the OpenAPI document."""

from __future__ import annotations

from functools import cache
from typing import Any

import jsonschema

from sidecar.api.server import openapi_document


@cache
def _document() -> dict[str, Any]:
    return openapi_document()


def response_schema(path: str, method: str, status: int) -> dict[str, Any] | None:
    """The JSON schema the OpenAPI document gives for this response (None: not JSON)."""
    document = _document()
    operation = document["paths"][path][method.lower()]
    response = operation["responses"].get(str(status))
    assert response is not None, f"{method} {path} answered {status}, not documented"
    if "$ref" in response:
        name = response["$ref"].rsplit("/", 1)[1]
        response = document["components"]["responses"][name]
    content = response["content"]
    if "application/json" not in content:
        return None
    return {**content["application/json"]["schema"], "components": document["components"]}


def assert_documented(path: str, method: str, status: int, body: Any) -> None:
    """Fail unless `body` matches what the OpenAPI document promises for this answer."""
    schema = response_schema(path, method, status)
    if schema is not None:
        jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)
