"""Interactive API docs on both front doors that work with no network: Swagger UI at
`/docs`, ReDoc at `/redoc`, over the door's own `/openapi.json`.

FastAPI's own pages load their scripts from a CDN, which a hospital network (or a machine
without internet) cannot reach. The assets come from the `fastapi-offline` wheel instead:
it ships Swagger UI 5 and ReDoc 2 builds and nothing else we run (we use its files, not
its FastAPI factory, so the gateway's own app class stays). Both doors report one
version: the package's.
"""

from __future__ import annotations

from importlib.metadata import version
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse

API_VERSION = version("vitals-pipeline")
ASSETS = "/docs/assets"  # Swagger UI's and ReDoc's scripts, styles and icon
DOCS_PATHS = ("/docs", "/redoc")


def _assets_folder() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def install(app: FastAPI) -> None:
    """Serve /docs and /redoc with their assets from this server."""
    app.mount(ASSETS, StaticFiles(directory=_assets_folder()), name="docs-assets")
    title = f"{app.title} {API_VERSION}"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{title}: Swagger UI",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
            # Swagger UI would fetch a validity badge from validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{title}: ReDoc",
            redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS}/favicon.png",
            with_google_fonts=False,
        )
