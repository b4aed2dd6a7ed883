"""The echo worker: answers with the request it received, as JSON (demos and tests)."""

from __future__ import annotations

import base64

from workers.sdk import Request, Response


async def echo(request: Request) -> Response:
    body = request.body
    try:
        text: str | None = body.decode()
    except UnicodeDecodeError:
        text = None
    principal = request.principal
    return Response.json(
        {
            "route": request.route,
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "params": request.params,
            "headers": [[name, value] for name, value in request.headers],
            "client": request.http.client,
            "body": text,
            "body_base64": None if text is not None else base64.b64encode(body).decode(),
            "principal": None if principal is None else principal.subject,
            "correlation_id": request.correlation_id,
            "traceparent": request.envelope.traceparent,
        }
    )
