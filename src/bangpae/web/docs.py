"""The API explorer at ``/api/v1/docs``: Swagger UI served from its Python package.

FastAPI's own page loads Swagger UI from a CDN (blank offline) and starts it with an
inline script, which our content security policy forbids. Here the files come from the
``swagger-ui-py`` package (Swagger UI 5, which reads OpenAPI 3.1) on this server, and
the page starts them from ``/static/docs/init.js``, under the same policy as every other
page. ``BANGPAE_API_DOCS=false`` turns it off.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>bangpae API</title>
<link rel="stylesheet" href="/static/swagger-ui/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/static/swagger-ui/swagger-ui-bundle.js"></script>
<script src="/static/docs/init.js"></script>
</body>
</html>
"""


def mount_docs(app: FastAPI) -> None:
    """The explorer's page and the package's files (before the catch-all ``/static``)."""
    import swagger_ui

    static = Path(swagger_ui.__file__).parent / "static"
    app.mount("/static/swagger-ui", StaticFiles(directory=static), name="swagger-ui")

    @app.get("/api/v1/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(PAGE)
