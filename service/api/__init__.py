"""Service layer (api): the wire formats, thin adapters around service.core's Engine.

`http_api` (FastAPI app, docs page), `json_api` (JSON bodies ↔ domain types), `schemas` (pydantic request and
response models), `tensors` (KServe v2 tensors ↔ arrays), `grpc_server` (KServe v2 and typed `mfd.v1` gRPC),
`proto/` (the `mfd.v1` stubs), `strict_json` (RFC 8259 in and out), `admission` (auth, in-flight limit, metrics),
`docs_examples` (the docs page's runnable examples).
"""
