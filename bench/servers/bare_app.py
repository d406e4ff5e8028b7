"""The bare Sanic anchor: one route, the same token comparison, the same bytes from memory.

    BARE_ANSWERS=dir BARE_TOKEN=T sanic bare_app:app --no-access-logs

``dir/answers.json`` maps "path?query" to [status, body file]; bodies are read once at
start. A request whose ``Authorization`` is not ``token T`` gets the 403 body (the
answer stored for "403"). No access log, no middleware, nothing else.
"""

import hmac
import json
import os
from pathlib import Path

from sanic import Request, Sanic
from sanic.response import HTTPResponse

ROOT = Path(os.environ["BARE_ANSWERS"])
EXPECTED = f"token {os.environ['BARE_TOKEN']}".encode()
ANSWERS = {
    target: (status, (ROOT / name).read_bytes())
    for target, (status, name) in json.loads((ROOT / "answers.json").read_text()).items()
}
JSON = "application/json"
OCTETS = "application/octet-stream"

app = Sanic("bare")


@app.get("/v1/device/rom", strict_slashes=False)
async def answer(request: Request) -> HTTPResponse:
    given = request.headers.get("authorization", "").encode()
    if not hmac.compare_digest(given, EXPECTED):
        status, body = ANSWERS["403"]
        return HTTPResponse(body, status=status, content_type=JSON)
    target = f"{request.path}?{request.query_string}" if request.query_string else request.path
    status, body = ANSWERS[target]
    return HTTPResponse(body, status=status, content_type=JSON if body[:1] == b"{" else OCTETS)
