"""HTTP plumbing, part one: the Response, the route table (ROUTES, filled by the @route decorator
of the routes_* modules), the context a route handler gets (Ctx), and the Authorization header."""

import base64
import json
import re

from .model import STATE
from .paging import paginate
from .util import HerokuError


class Response:
    def __init__(self, status=200, body=None, headers=None, raw=None):
        self.status, self.body, self.headers, self.raw = status, body, dict(headers or {}), raw


ROUTES = []   # (method, compiled regex, function, kind) kind: platform | data | admin


def route(method, pattern, kind="platform"):
    def deco(fn):
        ROUTES.append((method, re.compile("^" + pattern + "$"), fn, kind))
        return fn
    return deco


class Ctx:
    """What a route handler gets: parsed request, the token's account, helpers."""

    def __init__(self, handler, method, path, query, body, token):
        self.h, self.method, self.path, self.query = handler, method, path, query
        self.body, self.token = body, token
        self.account = token.account if token else None
        self.headers = handler.headers

    def header(self, name):
        return self.headers.get(name)

    def app(self, ident):
        app = STATE.find_app(ident)
        if app is None:
            raise HerokuError(404, "not_found", "Couldn't find that app.", resource="app")
        self.check_access(app)
        return app

    def check_access(self, app):
        if self.token is None:
            return
        if not self.token.may_access(app):
            raise HerokuError(403, "forbidden", f"You do not have access to the app {app.name}.")
        if self.token.two_factor_required:
            code = self.header("Heroku-Two-Factor-Code")
            if not (code and self.token.two_factor_code and code == self.token.two_factor_code):
                raise HerokuError(403, "two_factor",
                                  "A second authentication factor or pre-authorization is required "
                                  "for this request. Your account has either two-factor or a Heroku "
                                  "Enterprise Single Sign-On enabled.", app={"name": app.name})

    def json_body(self):
        if not self.body:
            return {}
        try:
            b = json.loads(self.body)
        except ValueError:
            raise HerokuError(400, "bad_request", "Invalid JSON in request body.")
        return b

    def list(self, items, allowed=("id",), default="id"):
        status, page, headers = paginate(items, self.header("Range"), allowed, default)
        return Response(status, page, headers)

    def include(self):
        return [s.strip() for s in (self.header("Accept-Inclusion") or "").split(",") if s.strip()]

    def expand(self):
        return [s.strip() for s in (self.header("Accept-Expansion") or "").split(",") if s.strip()]


def parse_auth(handler):
    """Returns (state, token) with state in absent | valid | invalid | expired (then the token
    too: it says which status to answer)."""
    h = handler.headers.get("Authorization")
    if not h:
        return "absent", None
    value = None
    if h.startswith("Bearer "):
        value = h[7:].strip()
    elif h.startswith("Basic "):
        try:
            user, _, pw = base64.b64decode(h[6:].strip()).decode().partition(":")
            value = pw or user
        except Exception:
            value = None
    tok = STATE.tokens.get(value) if value else None
    if tok is None:
        return "invalid", None
    if tok.is_expired():
        return "expired", tok
    return "valid", tok
