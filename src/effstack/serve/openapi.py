"""The server's OpenAPI 3.0 document, written out (the app is plain Starlette; see :mod:`effstack.serve.app`).

It describes the Open Inference Protocol endpoints as this server implements them; fuzzers
(schemathesis) generate requests from it, and clients can read it at ``GET /openapi.json``.

>>> doc = document()
>>> sorted(doc["paths"])[:2]
['/metrics', '/v2']
"""

from __future__ import annotations

from typing import Any

__all__ = ["document"]

_ERROR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}


def _json(ref: str, description: str = "ok") -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{ref}"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): _ERROR for c in codes}


_TENSOR_IN = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
                                                "INT64", "FP16", "FP32", "FP64", "BYTES"]},
        "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}},
        "data": {"type": "array", "description": "row-major values, flat or nested"},
    },
}

_SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "Live": {"type": "object", "properties": {"live": {"type": "boolean"}}},
    "Ready": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
    "ServerMetadata": {"type": "object", "required": ["name", "version", "extensions"], "properties": {
        "name": {"type": "string"}, "version": {"type": "string"},
        "extensions": {"type": "array", "items": {"type": "string"}}}},
    "TensorMetadata": {"type": "object", "required": ["name", "datatype", "shape"], "properties": {
        "name": {"type": "string"}, "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}}}},
    "ModelMetadata": {"type": "object", "required": ["name", "platform", "inputs", "outputs"], "properties": {
        "name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"},
        "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/TensorMetadata"}},
        "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/TensorMetadata"}}}},
    "InferenceRequest": {"type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object", "properties": {
            "timeout": {"type": "integer", "minimum": 1, "description": "microseconds"},
            "priority": {"type": "integer", "minimum": 0, "description": "1 is the most urgent; 0 the default"},
            "binary_data_output": {"type": "boolean"}}},
        "inputs": {"type": "array", "minItems": 1, "items": _TENSOR_IN},
        "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string"},
            "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}}}}}}},
    "InferenceResponse": {"type": "object", "required": ["model_name", "outputs"], "properties": {
        "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
        "outputs": {"type": "array", "items": {"type": "object", "required": ["name", "shape", "datatype"],
                                               "properties": {"name": {"type": "string"},
                                                              "shape": {"type": "array", "items": {"type": "integer"}},
                                                              "datatype": {"type": "string"},
                                                              "parameters": {"type": "object"},
                                                              "data": {"type": "array"}}}}}},
    "RepositoryIndex": {"type": "array", "items": {"type": "object", "properties": {
        "name": {"type": "string"}, "version": {"type": "string"}, "state": {"type": "string"},
        "reason": {"type": "string"}}}},
    "LoadRequest": {"type": "object", "properties": {"parameters": {"type": "object", "properties": {
        "config": {"type": "string", "description": "JSON object of serving settings to change"}}}}},
}


def _model_ops(prefix: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    infer_body = {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                     "description": "JSON header (Inference-Header-Content-Length bytes), "
                                                    "then tensors"},
    }}
    binary_header = {"name": "Inference-Header-Content-Length", "in": "header", "required": False,
                     "schema": {"type": "integer", "minimum": 0}}
    return {
        f"{prefix}": {"get": {"summary": "Model metadata", "parameters": params,
                              "responses": {"200": _json("ModelMetadata"), **_errors(401, 404, 503)}}},
        f"{prefix}/ready": {"get": {"summary": "Model readiness", "parameters": params,
                                    "responses": {"200": _json("Ready"), **_errors(401, 404, 503)}}},
        f"{prefix}/config": {"get": {"summary": "Triton-style model configuration", "parameters": params,
                                     "responses": {"200": {"description": "ok", "content": {"application/json": {
                                         "schema": {"type": "object"}}}}, **_errors(401, 404, 503)}}},
        f"{prefix}/infer": {"post": {
            "summary": "Inference (JSON tensors or the binary tensor extension)",
            "parameters": [*params, binary_header], "requestBody": infer_body,
            "responses": {"200": _json("InferenceResponse"), **_errors(400, 401, 404, 413, 503, 504)}}},
    }


def document(title: str = "effstack Open Inference Protocol server", version: str = "") -> dict[str, Any]:
    """The OpenAPI 3.0.3 document of the server."""
    paths: dict[str, Any] = {
        "/v2": {"get": {"summary": "Server metadata", "responses": {"200": _json("ServerMetadata"), **_errors(401)}}},
        "/v2/health/live": {"get": {"summary": "Server liveness", "responses": {"200": _json("Live")}}},
        "/v2/health/ready": {"get": {"summary": "Server readiness",
                                     "responses": {"200": _json("Ready"), "503": _json("Ready", "not ready")}}},
        "/v2/repository/index": {"post": {"summary": "Models in the repository",
                                          "responses": {"200": _json("RepositoryIndex"), **_errors(401)}}},
        "/v2/repository/models/{name}/load": {"post": {
            "summary": "Load or reload a model (settings in parameters.config)", "parameters": [_NAME],
            "requestBody": {"required": False, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/LoadRequest"}}}},
            "responses": {"200": {"description": "loaded"}, **_errors(400, 401, 404, 413)}}},
        "/v2/repository/models/{name}/unload": {"post": {
            "summary": "Unload a model after its admitted requests finish", "parameters": [_NAME],
            "responses": {"200": {"description": "unloaded"}, **_errors(400, 401, 404, 413)}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
            "200": {"description": "ok", "content": {"text/plain": {"schema": {"type": "string"}}}}, **_errors(401)}}},
    }
    paths.update(_model_ops("/v2/models/{name}", [_NAME]))
    paths.update(_model_ops("/v2/models/{name}/versions/{version}", [_NAME, _VERSION]))
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version or "0"},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": _SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
