"""HTTP plumbing, part two: the request handler (dispatch to the routes, auth, Accept, rate limit,
the request log, Heroku's headers) and injected faults."""

import json
import re
import time
import traceback
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from .model import STATE
from .public_urls import serve_public
from .routing import ROUTES, Ctx, Response, parse_auth
from .util import ACCEPT_RE, DOC_URL, HerokuError, log, new_id, redact


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-heroku"
    public_only = False   # set on the public (S3-like) server's handler class

    def log_message(self, fmt, *args):  # the default logs client addresses on stderr: quieter
        pass

    def do_GET(self):
        self.dispatch("GET")

    def do_HEAD(self):
        self.dispatch("HEAD")

    def do_POST(self):
        self.dispatch("POST")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def dispatch(self, method):
        started = time.time()
        u = urlsplit(self.path)
        path, query = u.path, parse_qs(u.query)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        # X-Http-Method-Override: POST emulating PATCH etc.
        if method == "POST" and self.headers.get("X-Http-Method-Override"):
            method = self.headers["X-Http-Method-Override"].upper()
        request_id = new_id()
        auth_state, token = parse_auth(self)
        entry = None
        if not path.startswith("/__fake/"):
            entry = {"time": started, "method": method, "path": path, "query": u.query,
                     "accept": self.headers.get("Accept"), "authorization": auth_state,
                     "range": self.headers.get("Range"),
                     "user_agent": self.headers.get("User-Agent"),
                     "content_type": self.headers.get("Content-Type"),
                     "request_id": request_id,
                     "server": "public" if self.public_only else "api",
                     "status": None}
            with STATE.lock:
                STATE.requests.append(entry)
        try:
            if self.public_only:
                resp = serve_public(self, method, path, query, auth_state)
                if resp is None:   # streamed already
                    if entry:
                        entry["status"] = self._streamed_status
                    return
            else:
                resp = self.handle_api(method, path, query, body, auth_state, token, request_id)
        except HerokuError as e:
            resp = Response(e.status, e.body())
        except Exception as e:  # a bug in the fake: answer like Heroku's 500
            traceback.print_exc()
            resp = Response(500, {"id": "internal_server_error",
                                  "message": f"fake-heroku internal error: {redact(e)}",
                                  "url": DOC_URL})
        if entry:
            entry["status"] = resp.status
        self.send(resp, method, request_id, token if auth_state == "valid" else None,
                  platform=not path.startswith(("/__fake/", "/__public/", "/client/")))
        if not path.startswith("/__fake/"):
            log(f"{method} {path} -> {resp.status}")

    def handle_api(self, method, path, query, body, auth_state, token, request_id):
        for m, rx, fn, kind in ROUTES:
            if m != method and not (method == "HEAD" and m == "GET"):
                continue
            match = rx.match(path)
            if not match:
                continue
            if kind == "admin":
                ctx = Ctx(self, method, path, query, body, None)
                with STATE.lock:
                    return fn(ctx, **match.groupdict())
            if kind == "platform" and not ACCEPT_RE.search(self.headers.get("Accept") or ""):
                raise HerokuError(406, "not_acceptable",
                                  "Please specify a version along with Heroku's API MIME type. "
                                  "For example, `Accept: application/vnd.heroku+json; version=3`.")
            if auth_state == "expired" and token.expired_status == 403:
                raise HerokuError(403, "forbidden", "You do not have access to this resource: "
                                  "your authorization has expired.")
            if auth_state != "valid":
                raise HerokuError(401, "unauthorized", "Invalid credentials provided.")
            with STATE.lock:
                fault = pick_fault(method, path, "before")
                if fault:
                    return fault
                if kind == "platform" and path != "/account/rate-limits":
                    ok, _ = STATE.take_rate_token(token.account)
                    if not ok:
                        raise HerokuError(429, "rate_limit",
                                          "Your account reached the API rate limit\n"
                                          "Please wait a few minutes before making new requests")
                ctx = Ctx(self, method, path, query, body, token)
                resp = fn(ctx, **match.groupdict())
                after = pick_fault(method, path, "after")
                return after or resp
        if not self.public_only and path.startswith("/client/"):
            return Response(404, {"id": "not_found", "message": "Not found.", "url": DOC_URL})
        raise HerokuError(404, "not_found", "The requested API endpoint was not found. Are you "
                          "using the right HTTP verb (i.e. `GET` vs. `POST`), and did you specify "
                          "your intended version with the `Accept` header?")

    def send(self, resp, method, request_id, token, platform):
        if resp.raw is not None:
            data = resp.raw
        elif resp.body is None:
            data = b""
        else:
            data = json.dumps(resp.body, indent=None).encode()
        self.send_response(resp.status)
        if resp.raw is None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.send_header("Request-Id", request_id)
        if platform and token is not None:
            with STATE.lock:
                self.send_header("RateLimit-Remaining", str(STATE.remaining(token.account)))
        elif platform:
            self.send_header("RateLimit-Remaining", str(int(STATE.rate["capacity"])))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)


def pick_fault(method, path, when):
    """First matching injected fault (caller holds the lock); None when none applies."""
    for f in list(STATE.faults):
        if f.get("when", "before") != when:
            continue
        if f.get("method") and f["method"].upper() != method:
            continue
        if f.get("path_regex") and not re.search(f["path_regex"], path):
            continue
        if f.get("after", 0) > 0:
            f["after"] -= 1
            continue
        if f.get("times") is not None:
            f["times"] -= 1
            if f["times"] <= 0:
                STATE.faults.remove(f)
        if f.get("delay_seconds"):
            STATE.lock.release()          # a slow answer must not freeze the whole fake
            try:
                time.sleep(float(f["delay_seconds"]))
            finally:
                STATE.lock.acquire()
        if f.get("status") is None:
            return None   # delay only
        return Response(int(f["status"]), {"id": f.get("id", "internal_server_error"),
                                           "message": f.get("message", "Internal server error."),
                                           "url": DOC_URL})
    return None
