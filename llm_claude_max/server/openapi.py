"""The server's OpenAPI document, generated from the pydantic models of each API (never kept by hand)."""

from __future__ import annotations

import functools
from importlib import metadata
from typing import Any

from pydantic import BaseModel

from .apis import openai_chat

REF = "#/components/schemas/{model}"


def _schema(model: type[BaseModel], components: dict[str, Any], mode: str = "validation") -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=REF, mode=mode)  # type: ignore[arg-type]
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": REF.format(model=model.__name__)}


def _errors(components: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    ref = _schema(model, components, "serialization")
    content = {"application/json": {"schema": ref}}
    return {
        str(status): {"description": text, "content": content}
        for status, text in (
            (400, "Invalid request"),
            (401, "Missing or wrong API key"),
            (404, "Unknown model or conversation"),
            (413, "Request body too large"),
            (429, "Busy, or the plan's usage limit reached (Retry-After)"),
            (502, "The Claude API or the CLI failed"),
            (503, "Not logged in, a billing route refused, or shutting down"),
            (504, "No answer in time"),
        )
    }


def _post(model: type[BaseModel], answer: type[BaseModel], errors: type[BaseModel], summary: str,
          components: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": _schema(model, components)}}},
            "responses": {
                "200": {
                    "description": "The answer (JSON), or server-sent events with `stream: true`",
                    "content": {
                        "application/json": {"schema": _schema(answer, components, "serialization")},
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                **_errors(components, errors),
            },
        }
    }


@functools.cache
def document() -> dict[str, Any]:
    components: dict[str, Any] = {}
    paths = {
        "/v1/chat/completions": _post(
            openai_chat.ChatCompletionRequest,
            openai_chat.ChatCompletion,
            openai_chat.ErrorBody,
            "OpenAI Chat Completions, with function calling",
            components,
        ),
        "/v1/models": {"get": {"summary": "The models the CLI offers", "responses": {"200": {"description": "OK"}}}},
        "/v1/models/{model}": {
            "get": {
                "summary": "One model",
                "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "OK"}, "404": {"description": "No such model"}},
            }
        },
        "/v1/usage": {
            "get": {
                "summary": "The plan's usage windows, as the CLI last reported them (docs/usage.md)",
                "responses": {"200": {"description": "OK"}},
            }
        },
        "/health": {"get": {"summary": "Liveness (no key needed)", "responses": {"200": {"description": "OK"}}}},
        "/health/deep": {
            "get": {
                "summary": "Asks the CLI which billing route it would use (no API call)",
                "responses": {"200": {"description": "OK"}, "503": {"description": "Not on a subscription"}},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "claude-max serve",
            "version": metadata.version("llm-claude-max"),
            "description": "Your Claude subscription through your own Claude Code CLI, on this machine.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"key": {"type": "http", "scheme": "bearer"}},
        },
    }
