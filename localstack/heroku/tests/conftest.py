"""Fixtures: one throwaway PostgreSQL cluster and one fake Heroku per test session, on free
ports, both always stopped at the end; a client that validates every Platform API answer
against the official schema as it goes."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import pgcluster  # noqa: E402
import schema_check  # noqa: E402

FAKE_DIR = os.path.dirname(HERE)   # `python -m fake_heroku` runs the package from here
TOKEN = "fake-heroku-token-0000-0000-000000000000"
ACCEPT = "application/vnd.heroku+json; version=3"
DEFAULT = object()


class R:
    def __init__(self, status, headers, raw):
        self.status, self.headers, self.raw = status, headers, raw
        try:
            self.body = json.loads(raw) if raw else None
        except ValueError:
            self.body = None

    def __repr__(self):
        return f"<R {self.status} {self.raw[:300]!r}>"


def http(method, url, body=None, headers=None, timeout=30):
    data = None
    headers = dict(headers or {})
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return R(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return R(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


class Client:
    """Talks to the fake. Every Platform API answer is checked: 2xx bodies against the schema
    link of the request, errors against Heroku's error body shape."""

    def __init__(self, base, public_base, schema):
        self.base, self.public_base, self.schema = base, public_base, schema
        self.validated = []          # (method, path, link title) of schema-checked answers

    def call(self, method, path, body=None, token=DEFAULT, accept=ACCEPT, headers=None,
             validate=True):
        h = dict(headers or {})
        if accept:
            h["Accept"] = accept
        tok = TOKEN if token is DEFAULT else token
        if tok:
            h["Authorization"] = f"Bearer {tok}"
        r = http(method, self.base + path, body, h)
        platform = not path.startswith(("/__fake/", "/client/"))
        if validate and platform:
            clean = path.split("?")[0]
            if 200 <= r.status < 300 and method != "HEAD" and self.schema is not None:
                strict = not any(k.lower() in ("accept-inclusion", "accept-expansion") for k in h)
                body = r.body
                if any(k.lower() == "accept-inclusion" for k in h):
                    body = schema_check.without_inclusions(body)
                link = self.schema.validate(method, clean, body, strict=strict)
                self.validated.append((method, clean, link["title"]))
            elif r.status >= 400:
                schema_check.check_error_body(r.status, r.body)
            assert "request-id" in r.headers, "no Request-Id header"
            assert "ratelimit-remaining" in r.headers, "no RateLimit-Remaining header"
        return r

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def patch(self, path, body, **kw):
        return self.call("PATCH", path, body, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body if body is not None else {}, **kw)

    def delete(self, path, **kw):
        return self.call("DELETE", path, **kw)

    # admin API
    def admin(self, method, path, body=None):
        r = http(method, self.base + "/__fake" + path, body)
        assert r.status < 300, f"admin {method} {path}: {r}"
        return r.body

    def state(self, app):
        return self.admin("GET", f"/apps/{app}/state")

    def wait_for(self, predicate, timeout=15, interval=0.1, what="condition"):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def start_fake(tmp_dir, extra_env=None):
    port, public_port = pgcluster.free_port(), pgcluster.free_port()
    log = open(os.path.join(tmp_dir, f"fake-{port}.log"), "wb")
    data_dir = os.path.join(tmp_dir, f"fake-data-{port}")   # removed with pytest's tmp dirs
    proc = subprocess.Popen([sys.executable, "-u", "-m", "fake_heroku", "--port", str(port),
                             "--public-port", str(public_port), "--data-dir", data_dir],
                            cwd=FAKE_DIR,
                            stdout=log, stderr=subprocess.STDOUT,   # in the run's group
                            env=dict(os.environ, **(extra_env or {})))
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 20
    while True:
        try:
            if http("GET", base + "/__fake/health", timeout=2).status == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError("fake Heroku did not start: " +
                               open(log.name, errors="replace").read()[-2000:])
        time.sleep(0.1)
    return proc, base, f"http://127.0.0.1:{public_port}", log.name


def stop_fake(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def schema():
    """The official schema, or None when it cannot be found (then schema checks are skipped,
    loudly; HEROKU2RDS_REQUIRE_SCHEMA=1 makes that a failure instead)."""
    path = schema_check.find_schema()
    if path is None:
        message = ("the official Heroku Platform API schema was not found (set HEROKU_PLATFORM_SCHEMA "
                   "to shared/reference/heroku-platform-schema.json): schema checks are SKIPPED")
        if os.environ.get("HEROKU2RDS_REQUIRE_SCHEMA") == "1":
            pytest.fail(message)
        print("\nWARNING: " + message, file=sys.stderr)
        return None
    return schema_check.Schema(path)


@pytest.fixture(scope="session")
def pg():
    """A cluster with a non-superuser owner role `app` (password with URL-special characters)
    and two databases, like a Heroku Postgres credential."""
    c = pgcluster.Cluster()
    try:
        c.start()
        c.psql(["create role app login password 's3cret pw/x'",
                "create database appdb owner app", "create database otherdb owner app"])
        c.psql("create table items(id bigint primary key, payload text not null);"
               "insert into items select g, md5(g::text) || repeat('x', 50) "
               "from generate_series(1, 30000) g;"
               "create table notes(id serial primary key, body text)", db="appdb", user="app")
        c.app_url = c.url("app", "s3cret%20pw%2Fx", "appdb")
        c.other_url = c.url("app", "s3cret%20pw%2Fx", "otherdb")
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def fake_server(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("fake"))
    proc, base, public, logf = start_fake(tmp)
    try:
        yield {"proc": proc, "base": base, "public": public, "log": logf}
    finally:
        stop_fake(proc)


@pytest.fixture
def fake(fake_server, schema):
    """A client on a freshly reset fake."""
    c = Client(fake_server["base"], fake_server["public"], schema)
    c.admin("POST", "/reset")
    c.log_file = fake_server["log"]
    return c


def make_app(fake, name="acme", database_url=None, formation=None, **extra):
    body = {"name": name, "region": "us", "stack": "heroku-24",
            "addon_plan": "heroku-postgresql:standard-0",
            "formation": formation if formation is not None else [
                {"type": "web", "quantity": 2, "size": "Standard-1X", "command": "exec sleep 600"},
                {"type": "worker", "quantity": 1, "size": "Standard-2X",
                 "command": "exec sleep 601"}],
            "config_vars": {"FOO": "bar"}, "dyno_start_seconds": 0.3,
            "dyno_stop_grace_seconds": 1.0, "release_seconds": 0.3, "backup_seconds": 1.0}
    if database_url:
        body["database_url"] = database_url
    body.update(extra)
    return fake.admin("POST", "/apps", body)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is as good as dead
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1].split()[0] != "Z"
    except OSError:
        return False
