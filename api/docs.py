"""The browsable API documentation at `/docs`: flask-smorest's Swagger UI page over
`/openapi.json`, its scripts and styles served from the `swagger-ui-bundle` package (the machines
reaching us may have no internet, so no CDN)."""

from __future__ import annotations

from flask import Blueprint, Response, send_from_directory
from swagger_ui_bundle import swagger_ui_path

ASSETS_URL = "/docs/assets/"

assets = Blueprint("docs_assets", __name__)


@assets.route(ASSETS_URL + "<path:filename>")
def asset(filename: str) -> Response:
    response = send_from_directory(swagger_ui_path, filename, max_age=24 * 3600)
    return response
