"""The Blueprint every API resource uses: flask-smorest's, with a request parser that reads
JSON numbers as exact Decimals and says `malformed_json` for a body that is not JSON."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import flask
import flask_smorest
from webargs import core
from webargs.flaskparser import FlaskParser, abort, is_json_request

from api import jsonio


def read_json(req: flask.Request) -> Any:
    """The request's JSON body, parsed exactly; `core.missing` when there is no body.

    Aborts 415 for a body that is not declared JSON and 400 (`malformed_json`) for one that
    does not parse.
    """
    if not is_json_request(req):
        if req.get_data(cache=True):
            abort(415, message="Send JSON with Content-Type: application/json.")
        return core.missing
    try:
        return jsonio.loads(req.get_data(cache=True))
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, RecursionError) as error:
        invalid_json(error)


def invalid_json(error: Exception) -> NoReturn:
    abort(400, exc=error, messages={"json": ["Invalid JSON body."]})


class ExactParser(FlaskParser):
    def _raw_load_json(self, req: flask.Request) -> Any:
        return read_json(req)

    def _handle_invalid_json_error(
        self, error: Any, req: flask.Request, *args: Any, **kwargs: Any
    ) -> NoReturn:
        invalid_json(error)


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = ExactParser()
