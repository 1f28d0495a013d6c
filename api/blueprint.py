"""The Blueprint every API resource uses: flask-smorest's, with a request parser that reads
JSON numbers as exact Decimals, says `malformed_json` for a body that is not JSON and
`invalid_characters` for a NUL in one, and refuses a missing body where the document
requires one."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, NoReturn

import flask
import flask_smorest
from webargs import core
from webargs.flaskparser import FlaskParser, abort, is_json_request

from api import jsonio
from api.errors import ApiError


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
    except jsonio.NulCharacter:
        raise ApiError(400, "invalid_characters", "NUL characters are not accepted.") from None
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


def links(status: int, **named: tuple[str, str, dict[str, str]]) -> dict[str, Any]:
    """OpenAPI links of a `status` answer, for `blp.doc`: each name is (method, path,
    {parameter: runtime expression}), e.g. a created resource's id feeding its reads."""
    return {
        "responses": {
            status: {
                "links": {
                    name: {
                        "operationRef": "#/paths/"
                        + path.replace("~", "~0").replace("/", "~1")
                        + "/"
                        + method.lower(),
                        "parameters": parameters,
                    }
                    for name, (method, path, parameters) in named.items()
                }
            }
        }
    }


BODY_REQUIRED = {"field": "", "code": "required", "message": "a JSON body is required"}


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = ExactParser()

    def arguments(  # type: ignore[no-untyped-def]
        self, schema, *, location: str = "json", required: bool = True, **kwargs: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """flask-smorest's, and a JSON body documented as required is required: a request
        without one is refused (422) rather than read as `{}`."""
        decorate = super().arguments(schema, location=location, required=required, **kwargs)
        if location != "json" or not required:
            return decorate  # type: ignore[no-any-return]

        def with_body(view: Callable[..., Any]) -> Callable[..., Any]:
            parsed = decorate(view)

            @functools.wraps(parsed)
            def guarded(*args: Any, **kw: Any) -> Any:
                if not flask.request.get_data(cache=True):
                    raise ApiError(
                        422, "validation_failed", "A JSON body is required.", errors=[BODY_REQUIRED]
                    )
                return parsed(*args, **kw)

            return guarded

        return with_body
