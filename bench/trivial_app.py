"""The HTTP limit for the usage benchmark: a Flask app that answers a small JSON POST with a
small JSON body and does nothing else, served by the same gunicorn settings (`bench.usage_http`
measures it in the same run)."""

from __future__ import annotations

from flask import Flask, request

app = Flask("trivial")


@app.post("/ok")
def ok() -> dict[str, object]:
    return {"ok": True, "size": len(request.get_data())}
