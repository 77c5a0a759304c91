"""The server's OpenAPI document, generated from the pydantic models of each API (never kept by hand)."""

from __future__ import annotations

import functools
from importlib import metadata
from typing import Any

from pydantic import BaseModel

from .apis import anthropic_messages, openai_chat, openai_responses

REF = "#/components/schemas/{model}"


def _schema(model: type[BaseModel], components: dict[str, Any], mode: str = "validation") -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=REF, mode=mode)  # type: ignore[arg-type]
    for name, part in {**schema.pop("$defs", {}), model.__name__: schema}.items():
        if components.setdefault(name, part) != part:  # two APIs' models of one name: rename one
            raise ValueError(f"Two different models are named {name} in the OpenAPI document.")
    return {"$ref": REF.format(model=model.__name__)}


def _errors(components: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    ref = _schema(model, components, "serialization")
    content = {"application/json": {"schema": ref}}
    return {
        str(status): {"description": text, "content": content}
        for status, text in (
            (400, "Invalid request"),
            (401, "Missing or wrong API key"),
            (404, "Unknown model, conversation or previous response"),
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
        "/v1/responses": _post(
            openai_responses.ResponseRequest,
            openai_responses.ResponseObject,
            openai_chat.ErrorBody,
            "OpenAI Responses API, with function calling and previous_response_id",
            components,
        ),
        "/v1/messages": _post(
            anthropic_messages.MessagesRequest,
            anthropic_messages.MessageObject,
            anthropic_messages.AnthropicErrorBody,
            "Anthropic Messages API, with tool use",
            components,
        ),
        "/v1/messages/count_tokens": {
            "post": {
                "summary": "Not available: the CLI cannot count tokens without a request (501, with the reason)",
                "responses": {
                    "501": {
                        "description": "Not available",
                        "content": {
                            "application/json": {
                                "schema": _schema(anthropic_messages.AnthropicErrorBody, components, "serialization")
                            }
                        },
                    }
                },
            }
        },
        "/v1/models": {
            "get": {
                "summary": "The models the CLI offers (the Anthropic shape with an `anthropic-version` header)",
                "responses": {"200": {"description": "OK"}},
            }
        },
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
