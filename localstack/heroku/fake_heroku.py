#!/usr/bin/env python3
"""A stateful fake of the Heroku Platform API v3 and the Heroku Postgres data API.

One process serves
  * the Platform API (/apps/..., /addons/..., /addon-attachments/..., /account, ...)
  * the Postgres data API (/client/v11/...), on the same port as the real CLI sends both to the
    same port when HEROKU_HOST is a full URL,
  * the admin API for tests (/__fake/..., no auth),
and, on a second port, the "S3" host that serves backup downloads through unauthenticated
public URLs (/__public/backups/<secret>/<name>).

Dynos are real processes (`bash -c COMMAND`, one process group each), backups are real
`pg_dump -Fc` files. Everything else lives in memory. See localstack/README.md ("Fake Heroku").

Secrets: tokens and database passwords are never written to the log or the request log.

Usage: fake_heroku.py [--host 127.0.0.1] [--port 4567] [--public-port PORT+1] [--pid-file F]
"""

import argparse
import base64
import ctypes
import hashlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

# ---------------------------------------------------------------------------------------------
# Constants and small helpers
# ---------------------------------------------------------------------------------------------

DEFAULT_TOKEN = os.environ.get("FAKE_HEROKU_TOKEN", "fake-heroku-token-0000-0000-000000000000")
DEFAULT_EMAIL = "owner@example.com"
DEFAULT_RATE_LIMIT = 4500          # Heroku's per-account bucket
DEFAULT_REFILL_PER_SECOND = 75 / 60.0
PAGE_DEFAULT = 200
PAGE_MAX = 1000
PUBLIC_URL_TTL = 3600              # like X-Amz-Expires=3600 on real backup URLs

ACCEPT_RE = re.compile(r"application/vnd\.heroku\+json;\s*version=3(\.[a-z]+)?\b")
DOC_URL = "https://devcenter.heroku.com/articles/platform-api-reference"

DYNO_SIZES = ["Eco", "Basic", "Standard-1X", "Standard-2X", "Performance-M", "Performance-L",
              "Performance-L-RAM", "Performance-XL", "Performance-2XL",
              "Private-S", "Private-M", "Private-L", "Shield-S", "Shield-M", "Shield-L"]
SIZE_BY_LOWER = {s.lower(): s for s in DYNO_SIZES}
MAX_QUANTITY = 100

PG_COLORS = ["AMBER", "AQUA", "BLACK", "BLUE", "BRONZE", "BROWN", "CHARCOAL", "COBALT", "COPPER",
             "CRIMSON", "CYAN", "GOLD", "GRAY", "GREEN", "IVORY", "JADE", "LIME", "MAGENTA",
             "MAROON", "MAUVE", "NAVY", "OLIVE", "ONYX", "ORANGE", "PINK", "PUCE", "PURPLE", "RED",
             "ROSE", "SILVER", "TEAL", "VIOLET", "WHITE", "YELLOW"]
ADJECTIVES = ["amorphous", "angular", "aerodynamic", "clean", "concave", "convex", "cubic",
              "curved", "flat", "opaque", "polished", "rigid", "round", "shaped", "sinuous",
              "solid", "spherical", "symmetrical", "transparent", "triangular", "vertical"]
NOUNS = ["river", "meadow", "harbor", "canyon", "forest", "island", "summit", "valley"]
PLAN_CENTS = {"essential-0": 500, "essential-1": 900, "essential-2": 2000, "mini": 500,
              "basic": 900, "standard-0": 5000, "standard-2": 20000, "premium-0": 20000}
DEFAULT_PORTS = {"postgres": 5432, "postgresql": 5432, "redis": 6379, "rediss": 6379,
                 "http": 80, "https": 443, "mysql": 3306, "amqp": 5672}

NAMESPACE = uuid.UUID("5d9f4c1e-7a43-4c3e-9b1f-1c0de0fa4e01")


def stable_id(kind, name):
    """Deterministic UUID for catalogue objects (regions, stacks, plans, services)."""
    return str(uuid.uuid5(NAMESPACE, f"{kind}:{name}"))


def new_id():
    return str(uuid.uuid4())


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def redact(text):
    """Hides passwords in URLs (scheme://user:PASSWORD@host) and anything token-like we know."""
    if not isinstance(text, str):
        text = str(text)
    text = re.sub(r"(\w+://[^:/@\s]*:)[^@/\s]+@", r"\1REDACTED@", text)
    for tok in list(STATE.tokens.keys()) if "STATE" in globals() else []:
        if tok and tok in text:
            text = text.replace(tok, "REDACTED")
    return text


def log(msg):
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} fake-heroku: {redact(msg)}\n")
    sys.stderr.flush()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class HerokuError(Exception):
    """An error answered with Heroku's body {"id","message","url"} (plus optional extras)."""

    def __init__(self, status, id_, message, **extra):
        super().__init__(message)
        self.status, self.id, self.message, self.extra = status, id_, message, extra

    def body(self):
        b = {"id": self.id, "message": self.message, "url": DOC_URL + "#errors"}
        b.update(self.extra)
        return b


def not_found(what="that"):
    return HerokuError(404, "not_found", f"Couldn't find {what}.", resource=None)


def invalid(message):
    return HerokuError(422, "invalid_params", message)


# ---------------------------------------------------------------------------------------------
# Postgres helpers (the fake acts as Heroku's infrastructure, so it reaches the database itself)
# ---------------------------------------------------------------------------------------------

def map_url(value, netmap):
    """Rewrites host:port of a URL-valued string according to the network map."""
    if not netmap or not isinstance(value, str) or "://" not in value:
        return value
    try:
        u = urlsplit(value)
        if not u.hostname:
            return value
        port = u.port or DEFAULT_PORTS.get(u.scheme)
    except ValueError:
        return value
    target = netmap.get(f"{u.hostname}:{port}") or netmap.get(u.hostname)
    if not target:
        return value
    userinfo = u.netloc.rpartition("@")[0]
    netloc = (userinfo + "@" if userinfo else "") + target
    return urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))


def pg_env(url, netmap):
    """libpq environment for a postgres:// URL; the password goes in PGPASSWORD, never argv."""
    u = urlsplit(map_url(url, netmap))
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("PG"):
            del env[k]
    env.update({
        "PGHOST": u.hostname or "127.0.0.1",
        "PGPORT": str(u.port or 5432),
        "PGDATABASE": unquote(u.path.lstrip("/")) or "postgres",
        "PGCONNECT_TIMEOUT": "5",
        # Heroku's own backup workers sit inside Heroku's network; a local stand-in cluster
        # usually has no TLS, so the fake prefers TLS instead of requiring it.
        "PGSSLMODE": "prefer",
        "PGAPPNAME": "heroku-fake-pgbackups",
    })
    if u.username:
        env["PGUSER"] = unquote(u.username)
    if u.password:
        env["PGPASSWORD"] = unquote(u.password)
    return env


def pg_query_info(url, netmap):
    """Facts pg:info shows, read from the real database. None when it is unreachable."""
    sql = ("select current_setting('server_version'), pg_database_size(current_database()), "
           "(select count(*) from pg_stat_activity where datname = current_database()), "
           "current_setting('max_connections'), "
           "(select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace "
           " where c.relkind in ('r','p') and n.nspname not in ('pg_catalog','information_schema')"
           " and n.nspname not like 'pg_toast%'), current_user, current_database()")
    try:
        out = subprocess.run(["psql", "-X", "-A", "-t", "-F", "|", "-c", sql],
                             env=pg_env(url, netmap), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    parts = out.stdout.strip().split("|")
    if len(parts) != 7:
        return None
    return {"version": parts[0].split()[0], "bytes": int(parts[1]), "connections": int(parts[2]),
            "max_connections": int(parts[3]), "tables": int(parts[4]), "user": parts[5],
            "database": parts[6]}


def human_bytes(n):
    for unit in ["bytes", "kB", "MB", "GB", "TB"]:
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024.0
    return str(n)


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------

class Account:
    def __init__(self, email):
        self.id, self.email, self.created_at = new_id(), email, time.time()

    def json(self):
        t = iso(self.created_at)
        return {"allow_tracking": True, "beta": False, "created_at": t, "email": self.email,
                "federated": False, "id": self.id, "identity_provider": None, "last_login": t,
                "name": self.email.split("@")[0], "sms_number": None, "suspended_at": None,
                "delinquent_at": None, "two_factor_authentication": False, "updated_at": t,
                "verified": True, "acknowledged_msa": True, "acknowledged_msa_at": t,
                "italian_customer_terms": None, "italian_partner_terms": None,
                "default_organization": None, "default_team": None}


class Token:
    def __init__(self, value, account, two_factor_required=False, expired=False, apps=None,
                 two_factor_code=None):
        self.value, self.account = value, account
        self.two_factor_required, self.expired = two_factor_required, expired
        self.apps = list(apps) if apps is not None else ["*"]
        self.two_factor_code = two_factor_code

    def may_access(self, app):
        return "*" in self.apps or app.name in self.apps or app.id in self.apps


class Formation:
    def __init__(self, app, type_, quantity, size, command):
        self.id, self.app, self.type = new_id(), app, type_
        self.quantity, self.size, self.command = quantity, size, command
        self.created_at = self.updated_at = time.time()

    def json(self):
        return {"app": self.app.ref(), "command": self.command, "created_at": iso(self.created_at),
                "id": self.id, "quantity": self.quantity, "size": self.size, "type": self.type,
                "updated_at": iso(self.updated_at)}


class Release:
    def __init__(self, app, version, description, user, config, status="pending"):
        self.id, self.app, self.version = new_id(), app, version
        self.description, self.user, self.status = description, user, status
        self.config = dict(config)                  # snapshot the release's dynos run with
        self.created_at = self.updated_at = time.time()
        self.addon_plan_names = sorted({a.plan for a in app.attached_addons()})
        self.fail = False

    def json(self):
        return {"addon_plan_names": self.addon_plan_names, "app": self.app.ref(),
                "created_at": iso(self.created_at), "description": self.description,
                "id": self.id, "updated_at": iso(self.updated_at), "slug": None,
                "status": self.status,
                "user": {"id": self.user.id, "email": self.user.email},
                "version": self.version, "current": self.app.current_release() is self,
                "output_stream_url": None}


class Dyno:
    """One dyno: a real `bash -c command` process in its own process group.

    phase: spawn (process to be started) -> starting -> up; stopping (SIGTERM sent, SIGKILL at
    kill_at; then removed or respawned per after_stop); crashed (respawn at restart_at)."""

    def __init__(self, app, name, type_, size, command, oneoff=False, env=None, ttl=None):
        self.id, self.app, self.name, self.type = new_id(), app, name, type_
        self.size, self.command, self.oneoff = size, command, oneoff
        self.extra_env = dict(env or {})
        self.ttl_deadline = time.time() + ttl if ttl else None
        self.phase, self.after_stop = "spawn", None
        self.proc, self.port, self.release = None, None, None
        self.started_at = self.kill_at = self.restart_at = None
        self.exit_status = None
        self.created_at = self.updated_at = time.time()

    @property
    def state(self):
        if self.phase in ("spawn", "starting"):
            return "starting"
        if self.phase == "stopping":
            return "starting" if self.after_stop == "restart" else "down"
        return self.phase  # up, crashed

    def json(self):
        rel = self.release or self.app.current_release()
        return {"attach_url": None, "command": self.command, "created_at": iso(self.created_at),
                "id": self.id, "name": self.name,
                "release": {"id": rel.id, "version": rel.version} if rel else None,
                "app": self.app.ref(), "size": self.size, "state": self.state, "type": self.type,
                "updated_at": iso(self.updated_at)}


class Addon:
    def __init__(self, app, plan, database_url, name=None):
        self.id, self.app, self.plan = new_id(), app, plan        # app = billing app
        self.name = name or f"postgresql-{random.choice(ADJECTIVES)}-{random.randint(10000, 99999)}"
        self.database_url = database_url
        self.state = "provisioned"
        self.created_at = self.updated_at = time.time()

    @property
    def service(self):
        return self.plan.split(":", 1)[0]

    def attachments(self):
        return [a for a in STATE.attachments.values() if a.addon is self]

    def json(self, expand=()):
        plan_short = self.plan.split(":", 1)[1] if ":" in self.plan else self.plan
        cents = PLAN_CENTS.get(plan_short, 5000)
        plan = {"id": stable_id("plan", self.plan), "name": self.plan}
        service = {"id": stable_id("service", self.service), "name": self.service}
        if "plan" in expand:
            plan.update({"price": {"cents": cents, "contract": False, "unit": "month"},
                         "human_name": plan_short.replace("-", " ").title(),
                         "description": f"{self.service.title()} {plan_short}"})
        if "addon_service" in expand:
            service.update({"human_name": "Heroku Postgres", "state": "ga"})
        own_vars = [a.name + "_URL" for a in self.attachments() if a.app is self.app]
        return {"actions": [], "addon_service": service,
                "billing_entity": {"id": self.app.id, "name": self.app.name, "type": "app"},
                "app": self.app.ref(),
                "billed_price": {"cents": cents, "contract": False, "unit": "month"},
                "config_vars": own_vars or ["DATABASE_URL"], "created_at": iso(self.created_at),
                "id": self.id, "name": self.name, "plan": plan,
                "provider_id": "resource" + str(abs(hash(self.id)) % 10 ** 8),
                "state": self.state, "updated_at": iso(self.updated_at),
                "web_url": f"https://data.heroku.com/datastores/{self.id}"}


class Attachment:
    def __init__(self, app, addon, name, namespace=None):
        self.id, self.app, self.addon, self.name = new_id(), app, addon, name
        self.namespace = namespace
        self.created_at = self.updated_at = time.time()

    @property
    def config_var(self):
        return self.name + "_URL"

    def json(self, include=()):
        addon = {"id": self.addon.id, "name": self.addon.name, "app": self.addon.app.ref()}
        j = {"addon": addon, "app": self.app.ref(), "created_at": iso(self.created_at),
             "id": self.id, "name": self.name, "namespace": self.namespace,
             "updated_at": iso(self.updated_at),
             "web_url": f"https://data.heroku.com/datastores/{self.addon.id}",
             "log_input_url": None}
        # Accept-Inclusion (used by the CLI with version=3.sdk): extra fields beyond the schema
        if "addon:plan" in include:
            addon["plan"] = {"id": stable_id("plan", self.addon.plan), "name": self.addon.plan}
        if "config_vars" in include:
            j["config_vars"] = [self.config_var]
        return j


class Transfer:
    """A PGBackups transfer (backup = pg_dump -> gof3r)."""

    def __init__(self, app, addon, num, from_name):
        self.uuid, self.app, self.addon, self.num = new_id(), app, addon, num
        self.from_name = from_name
        self.created_at = self.updated_at = time.time()
        self.started_at = self.finished_at = self.canceled_at = self.deleted_at = None
        self.succeeded = False
        self.source_bytes = 0
        self.file = None
        self.pgdump_done = False
        self.pgdump_ok = False
        self.proc = None
        self.logs = []
        self.fail = False
        self.min_seconds = app.settings["backup_seconds"]
        self.public_urls = {}         # secret -> expiry time; each signed URL stays valid

    @property
    def label(self):
        return f"b{self.num:03d}"

    def actual_bytes(self):
        try:
            return os.path.getsize(self.file) if self.file else 0
        except OSError:
            return 0

    def processed_bytes(self):
        """Grows while running: the dump's real size, paced over at least min_seconds."""
        actual = self.actual_bytes()
        if self.finished_at or not self.started_at or self.min_seconds <= 0:
            return actual
        frac = min(1.0, (time.time() - self.started_at) / self.min_seconds)
        return int(actual * frac)

    def add_log(self, level, message):
        self.logs.append({"created_at": iso(time.time()), "level": level,
                          "message": redact(message)})

    def json(self, verbose=False):
        j = {"uuid": self.uuid, "num": self.num, "from_name": self.from_name,
             "from_type": "pg_dump", "from_url": redact(self.addon.database_url),
             "to_name": "BACKUP", "to_type": "gof3r",
             "to_url": f"https://xfrtu.s3.amazonaws.com/{self.uuid}/{self.label}",
             "options": {}, "source_bytes": self.source_bytes,
             "processed_bytes": self.processed_bytes(), "succeeded": self.succeeded,
             "warnings": 0, "created_at": iso(self.created_at),
             "started_at": iso(self.started_at) if self.started_at else None,
             "finished_at": iso(self.finished_at) if self.finished_at else None,
             "canceled_at": iso(self.canceled_at) if self.canceled_at else None,
             "deleted_at": iso(self.deleted_at) if self.deleted_at else None,
             "purged_at": None, "updated_at": iso(self.updated_at), "num_keep": 25,
             "schedule": None}
        if verbose:
            j["logs"] = list(self.logs)
        return j


class App:
    def __init__(self, name, owner, region="us", stack="heroku-24", settings=None):
        self.id, self.name, self.owner = new_id(), name, owner
        self.region, self.stack = region, stack
        self.maintenance = False
        self.created_at = self.updated_at = self.released_at = time.time()
        self.config = {}
        self.formation = {}           # type -> Formation (insertion order = display order)
        self.dynos = {}               # name -> Dyno
        self.releases = []
        self.transfers = []
        self.settings = {"dyno_start_seconds": 1.0, "dyno_stop_grace_seconds": 3.0,
                         "release_seconds": 0.5, "backup_seconds": 2.0,
                         "crash_restart_seconds": 2.0}
        self.settings.update(settings or {})

    def ref(self):
        return {"id": self.id, "name": self.name}

    def json(self):
        region = {"id": stable_id("region", self.region), "name": self.region}
        stack = {"id": stable_id("stack", self.stack), "name": self.stack}
        return {"acm": False, "archived_at": None, "buildpack_provided_description": None,
                "build_stack": stack, "created_at": iso(self.created_at),
                "git_url": f"https://git.heroku.com/{self.name}.git", "id": self.id,
                "internal_routing": None, "maintenance": self.maintenance, "name": self.name,
                "owner": {"email": self.owner.email, "id": self.owner.id},
                "organization": None, "team": None, "region": region,
                "released_at": iso(self.released_at), "repo_size": None, "slug_size": None,
                "space": None, "stack": stack, "updated_at": iso(self.updated_at),
                "web_url": f"https://{self.web_host()}.herokuapp.com/"}

    def web_host(self):
        # New apps get NAME-HASH.herokuapp.com; the schema caps the label at 31 characters.
        room = 30 - len(self.name) - 1
        return f"{self.name}-{self.id.replace('-', '')[:min(room, 12)]}" if room >= 4 else self.name

    def attachments(self):
        return [a for a in STATE.attachments.values() if a.app is self]

    def attached_addons(self):
        seen = []
        for a in self.attachments():
            if a.addon not in seen:
                seen.append(a.addon)
        return seen

    def attachment_vars(self):
        return {a.config_var: a for a in self.attachments()}

    def current_release(self):
        for r in reversed(self.releases):
            if r.status == "succeeded":
                return r
        return None


class State:
    def __init__(self):
        self.lock = threading.RLock()
        self.reset()

    def reset(self):
        self.accounts = {}
        self.tokens = {}
        self.apps = {}                # id -> App
        self.addons = {}              # id -> Addon
        self.attachments = {}         # id -> Attachment
        self.faults = []
        self.requests = []
        self.netmap = {}
        self.next_database_urls = []  # for add-ons created through the Platform API (CLI)
        self.default_database_url = os.environ.get("FAKE_HEROKU_DEFAULT_DATABASE_URL")
        self.rate = {"capacity": DEFAULT_RATE_LIMIT, "refill": DEFAULT_REFILL_PER_SECOND}
        self.buckets = {}             # account id -> [remaining(float), last_refill_time]
        self.release_faults = {}      # app name -> list of statuses for the next releases
        self.backup_faults = {}       # app name -> count of next backups to fail
        owner = self.account(DEFAULT_EMAIL)
        self.tokens[DEFAULT_TOKEN] = Token(DEFAULT_TOKEN, owner)

    def account(self, email):
        for a in self.accounts.values():
            if a.email == email:
                return a
        a = Account(email)
        self.accounts[a.id] = a
        return a

    def find_app(self, ident):
        ident = unquote(ident)
        if ident in self.apps:
            return self.apps[ident]
        for a in self.apps.values():
            if a.name == ident:
                return a
        return None

    def find_addon(self, ident, app=None):
        ident = unquote(ident)
        for a in self.addons.values():
            if a.id == ident or a.name == ident:
                return a
        if app is not None:   # an attachment name on that app also identifies the add-on
            for att in app.attachments():
                if att.name == ident:
                    return att.addon
        return None

    # --- rate limiting: one token bucket per account ---------------------------------------
    def take_rate_token(self, account, consume=True):
        now = time.time()
        b = self.buckets.setdefault(account.id, [float(self.rate["capacity"]), now])
        b[0] = min(float(self.rate["capacity"]), b[0] + (now - b[1]) * self.rate["refill"])
        b[1] = now
        if b[0] < 1.0:
            return False, 0
        if consume:
            b[0] -= 1.0
        return True, int(b[0])

    def remaining(self, account):
        return self.take_rate_token(account, consume=False)[1]


STATE = State()


# ---------------------------------------------------------------------------------------------
# App operations shared by the Platform API and the admin API (caller holds STATE.lock)
# ---------------------------------------------------------------------------------------------

def create_release(app, description, user, immediate=False):
    version = app.releases[-1].version + 1 if app.releases else 1
    rel = Release(app, version, description, user, app.config)
    faults = STATE.release_faults.get(app.name)
    if faults:
        rel.fail = faults.pop(0) == "failed"
    if immediate and not rel.fail:
        rel.status = "succeeded"
        app.released_at = time.time()
    rel.due = time.time() + app.settings["release_seconds"]
    app.releases.append(rel)
    log(f"{app.name}: release v{version} {description!r} ({rel.status})")
    return rel


def attach(app, addon, name, user, namespace=None, release=True, immediate=False):
    att = Attachment(app, addon, name, namespace)
    STATE.attachments[att.id] = att
    app.config[att.config_var] = addon.database_url
    if release:
        create_release(app, f"Attach {name} (@ref:{addon.name})", user, immediate)
    return att


def detach(att, user):
    app = att.app
    del STATE.attachments[att.id]
    app.config.pop(att.config_var, None)
    return create_release(app, f"Detach {att.name} (@ref:{att.addon.name})", user)


def next_color_name(app):
    used = {a.name for a in app.attachments()}
    for c in PG_COLORS:
        if f"HEROKU_POSTGRESQL_{c}" not in used:
            return f"HEROKU_POSTGRESQL_{c}"
    return f"HEROKU_POSTGRESQL_{secrets.token_hex(3).upper()}"


def add_postgres(app, plan, url, user, attachment_name=None, release=True, immediate=False):
    if not plan.startswith("heroku-postgresql:"):
        plan = "heroku-postgresql:" + plan.split(":")[-1]
    addon = Addon(app, plan, url)
    STATE.addons[addon.id] = addon
    has_db = any(a.name == "DATABASE" for a in app.attachments()) or "DATABASE_URL" in app.config
    name = attachment_name or ("DATABASE" if not has_db else next_color_name(app))
    att = attach(app, addon, name, user, release=release, immediate=immediate)
    return addon, att


def dyno_names_in_use(app, type_):
    return {d.name for d in app.dynos.values()}


def reconcile_formation(app, ftype):
    """Adds or stops dynos so the running count of a type matches its quantity."""
    f = app.formation[ftype]
    alive = sorted((d for d in app.dynos.values()
                    if d.type == ftype and not d.oneoff
                    and not (d.phase == "stopping" and d.after_stop == "remove")),
                   key=lambda d: int(d.name.rsplit(".", 1)[1]))
    for d in alive[f.quantity:]:
        stop_dyno(d, "remove")
    n = len(alive)
    i = 1
    while n < f.quantity:
        name = f"{ftype}.{i}"
        if name not in app.dynos:
            app.dynos[name] = Dyno(app, name, ftype, f.size, f.command)
            n += 1
        i += 1


def stop_dyno(d, after):
    """Schedules SIGTERM now and SIGKILL after the grace; after='remove' or 'restart'."""
    if d.phase == "stopping":
        if after == "remove":
            d.after_stop = "remove"
        return
    if d.phase == "spawn" or d.proc is None or d.proc.poll() is not None:
        if after == "remove":
            kill_group(d, signal.SIGKILL)
            d.app.dynos.pop(d.name, None)
        else:
            d.phase, d.proc = "spawn", None
        return
    d.phase, d.after_stop = "stopping", after
    d.kill_at = time.time() + d.app.settings["dyno_stop_grace_seconds"]
    d.updated_at = time.time()
    kill_group(d, signal.SIGTERM)


def restart_dyno(d):
    if d.oneoff:
        stop_dyno(d, "remove")
    else:
        stop_dyno(d, "restart")


def kill_group(d, sig):
    if d.proc is not None:
        try:
            os.killpg(d.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


# ---------------------------------------------------------------------------------------------
# The supervisor: spawns and reaps dyno processes, moves releases and backups along
# ---------------------------------------------------------------------------------------------

LIBC = None
try:
    LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:
    pass


def _child_setup():
    # Runs in the child after setsid (start_new_session): die with the fake's supervisor thread.
    if LIBC is not None:
        LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Supervisor(threading.Thread):
    def __init__(self, data_dir):
        super().__init__(daemon=True, name="supervisor")
        self.data_dir = data_dir
        self.stopping = False
        self.dyno_log_dir = os.path.join(data_dir, "dynos")
        os.makedirs(self.dyno_log_dir, exist_ok=True)

    def run(self):
        while not self.stopping:
            try:
                with STATE.lock:
                    self.tick()
            except Exception:  # keep supervising whatever happens
                traceback.print_exc()
            time.sleep(0.05)

    def tick(self):
        now = time.time()
        for app in list(STATE.apps.values()):
            for rel in app.releases:
                if rel.status == "pending" and now >= rel.due:
                    rel.status = "failed" if rel.fail else "succeeded"
                    rel.updated_at = now
                    log(f"{app.name}: release v{rel.version} {rel.status}")
                    if rel.status == "succeeded" and rel is app.current_release():
                        app.released_at = now
                        for d in list(app.dynos.values()):
                            if not d.oneoff and d.phase in ("starting", "up", "crashed"):
                                restart_dyno(d)
            for d in list(app.dynos.values()):
                self.tick_dyno(app, d, now)

    def tick_dyno(self, app, d, now):
        if d.phase == "spawn":
            self.spawn(app, d)
            return
        exited = d.proc is not None and d.proc.poll() is not None
        if d.phase == "stopping":
            if exited:
                kill_group(d, signal.SIGKILL)   # whatever the command left behind
                if d.after_stop == "remove":
                    app.dynos.pop(d.name, None)
                else:
                    d.phase, d.proc = "spawn", None
                    self.spawn(app, d)
            elif now >= d.kill_at:
                kill_group(d, signal.SIGKILL)
            return
        if d.ttl_deadline and now >= d.ttl_deadline:
            stop_dyno(d, "remove")
            return
        if exited:
            d.exit_status = d.proc.returncode
            kill_group(d, signal.SIGKILL)
            if d.oneoff:
                app.dynos.pop(d.name, None)       # a finished one-off dyno disappears
                return
            if d.phase != "crashed":
                log(f"{app.name}: {d.name} exited with status {d.exit_status}: crashed")
                d.phase, d.updated_at = "crashed", now
                d.restart_at = now + app.settings["crash_restart_seconds"]
            elif now >= d.restart_at:
                d.phase, d.proc = "spawn", None
            return
        if d.phase == "starting" and now - d.started_at >= app.settings["dyno_start_seconds"]:
            d.phase, d.updated_at = "up", now

    def spawn(self, app, d):
        rel = app.current_release()
        d.release = rel
        env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TZ") if k in os.environ}
        for k, v in (rel.config if rel else app.config).items():
            env[k] = map_url(v, STATE.netmap)
        for k, v in d.extra_env.items():
            env[k] = map_url(v, STATE.netmap)
        d.port = free_port()
        env.update({"DYNO": d.name, "PORT": str(d.port)})
        logf = open(os.path.join(self.dyno_log_dir, f"{app.name}.log"), "ab")
        logf.write(f"--- {iso(time.time())} {d.name} starting (release v{rel.version if rel else 0})\n"
                   .encode())
        logf.flush()
        try:
            d.proc = subprocess.Popen(["bash", "-c", d.command], env=env, stdin=subprocess.DEVNULL,
                                      stdout=logf, stderr=subprocess.STDOUT, cwd=self.data_dir,
                                      start_new_session=True, preexec_fn=_child_setup)
        finally:
            logf.close()
        d.phase, d.started_at, d.updated_at = "starting", time.time(), time.time()

    def kill_all(self):
        """Shutdown: SIGTERM every dyno and backup process group, SIGKILL what remains."""
        self.stopping = True
        with STATE.lock:
            procs = [d.proc for a in STATE.apps.values() for d in a.dynos.values() if d.proc]
            procs += [t.proc for a in STATE.apps.values() for t in a.transfers if t.proc]
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.time() + 2
        while time.time() < deadline and any(p.poll() is None for p in procs):
            time.sleep(0.05)
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass


SUPERVISOR = None


def kill_everything_of(apps):
    """Used by reset: stops processes of the given apps at once (no grace)."""
    for app in apps:
        for d in app.dynos.values():
            kill_group(d, signal.SIGKILL)
        for t in app.transfers:
            if t.proc and t.proc.poll() is None:
                try:
                    os.killpg(t.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def run_backup(t):
    """Background thread: a real pg_dump -Fc of the add-on's database into the data dir."""
    url = t.addon.database_url
    netmap = dict(STATE.netmap)
    with STATE.lock:
        t.started_at = t.updated_at = time.time()
        t.add_log("info", f"Starting backup of {t.from_name}")
    info = pg_query_info(url, netmap)
    if info:
        t.source_bytes = info["bytes"]
    err_path = t.file + ".err"
    with open(t.file, "wb") as out, open(err_path, "wb") as err:
        try:
            t.proc = subprocess.Popen(["pg_dump", "-Fc", "--no-acl", "--no-owner"],
                                      env=pg_env(url, netmap), stdout=out, stderr=err,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
            rc = t.proc.wait()
        except OSError as e:
            rc = -1
            err.write(str(e).encode())
    with open(err_path, "rb") as f:
        errtext = f.read().decode("utf-8", "replace")
    os.unlink(err_path)
    # Keep the pacing (processed_bytes growing) for at least min_seconds
    while time.time() - t.started_at < t.min_seconds and t.canceled_at is None:
        time.sleep(0.05)
    with STATE.lock:
        now = time.time()
        t.finished_at = t.updated_at = now
        if t.canceled_at:
            t.succeeded = False
            t.add_log("info", "Backup canceled")
        elif rc == 0 and not t.fail:
            t.succeeded = True
            t.add_log("info", f"pg_dump finished successfully ({t.actual_bytes()} bytes)")
        else:
            t.succeeded = False
            for line in (errtext.strip().splitlines() or ["backup failed"])[-5:]:
                t.add_log("error", line)
            if t.fail:
                t.add_log("error", "backup failed (injected fault)")
        log(f"{t.app.name}: backup {t.label} finished, succeeded={t.succeeded}")


# ---------------------------------------------------------------------------------------------
# Paging (Range / Next-Range / Content-Range)
# ---------------------------------------------------------------------------------------------

RANGE_RE = re.compile(r"^\s*(?P<field>[a-z_]+)\s+(?P<excl>\])?(?P<start>[^.;]*)\.\.(?P<end>[^;]*)"
                      r"(?:;(?P<params>.*))?$")


def paginate(items, range_header, allowed=("id",), default_field="id"):
    """Returns (status, page, headers) for a list of JSON objects."""
    field, start, end, excl, size, order = default_field, None, None, False, PAGE_DEFAULT, "asc"
    if range_header:
        m = RANGE_RE.match(range_header)
        if not m:
            raise HerokuError(416, "requested_range_not_satisfiable",
                              f"Invalid range: {range_header}")
        field = m.group("field")
        start = m.group("start").strip() or None
        end = m.group("end").strip() or None
        excl = bool(m.group("excl"))
        for part in re.split(r"[;,]", m.group("params") or ""):
            part = part.strip()
            if not part:
                continue
            k, _, v = part.partition("=")
            k, v = k.strip(), v.strip()
            if k == "max":
                if not v.isdigit() or int(v) < 1:
                    raise HerokuError(416, "requested_range_not_satisfiable",
                                      f"Invalid range max: {v}")
                size = min(int(v), PAGE_MAX)
            elif k == "order":
                if v not in ("asc", "desc"):
                    raise HerokuError(416, "requested_range_not_satisfiable",
                                      f"Invalid range order: {v}")
                order = v
        if field not in allowed:
            raise HerokuError(416, "requested_range_not_satisfiable",
                              f"Invalid range field: {field}. Valid fields: {', '.join(allowed)}.")

    def key(v):
        return (0, v, "") if isinstance(v, int) else (1, 0, str(v))

    def conv(s):
        return int(s) if s is not None and s.lstrip("-").isdigit() else s

    items = sorted(items, key=lambda o: key(o.get(field)), reverse=(order == "desc"))
    if start is not None:
        s = key(conv(start))
        if order == "asc":
            items = [o for o in items if key(o.get(field)) > s or (not excl and key(o.get(field)) == s)]
        else:
            items = [o for o in items if key(o.get(field)) < s or (not excl and key(o.get(field)) == s)]
    if end is not None:
        e = key(conv(end))
        items = [o for o in items if (key(o.get(field)) <= e if order == "asc" else key(o.get(field)) >= e)]
    page = items[:size]
    headers = {"Accept-Ranges": ", ".join(allowed)}
    if page:
        headers["Content-Range"] = f"{field} {page[0].get(field)}..{page[-1].get(field)}"
    status = 200
    if len(items) > size:
        status = 206
        headers["Next-Range"] = f"{field} ]{page[-1].get(field)}..; max={size}, order={order}"
    return status, page, headers


# ---------------------------------------------------------------------------------------------
# HTTP plumbing
# ---------------------------------------------------------------------------------------------

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
    """Returns (state, token) with state in absent | valid | invalid."""
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
    if tok is None or tok.expired:
        return "invalid", None
    return "valid", tok


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


# ---------------------------------------------------------------------------------------------
# Platform API routes
# ---------------------------------------------------------------------------------------------

APP = r"/apps/(?P<app>[^/]+)"


@route("GET", "/account")
def account_info(c):
    return Response(200, c.account.json())


@route("GET", "/account/rate-limits")
def rate_limits(c):
    return Response(200, {"remaining": STATE.remaining(c.account)})


@route("GET", "/apps")
def apps_list(c):
    apps = [a.json() for a in STATE.apps.values() if c.token.may_access(a)]
    return c.list(apps, ("id", "name", "updated_at"))


@route("POST", "/apps")
def apps_create(c):
    b = c.json_body()
    name = b.get("name")
    if name is None:
        while True:
            name = f"{random.choice(ADJECTIVES)}-{random.choice(NOUNS)}-{random.randint(10000, 99999)}"
            if not STATE.find_app(name):
                break
    if not isinstance(name, str) or not re.match(r"^[a-z][a-z0-9-]{1,28}[a-z0-9]$", name):
        raise invalid("Name must start with a letter, end with a letter or digit and can only "
                      "contain lowercase letters, digits, and dashes.")
    if STATE.find_app(name):
        raise invalid("Name is already taken")
    region = b.get("region") or "us"
    stack = b.get("stack") or "heroku-24"
    if region not in ("us", "eu"):
        raise not_found("that region")
    app = App(name, c.account, region, stack)
    STATE.apps[app.id] = app
    if "*" not in c.token.apps:
        c.token.apps.append(name)
    create_release(app, "Initial release", c.account, immediate=True)
    return Response(201, app.json())


@route("GET", APP)
def app_info(c, app):
    return Response(200, c.app(app).json())


@route("PATCH", APP)
def app_update(c, app):
    a = c.app(app)
    b = c.json_body()
    if not isinstance(b, dict):
        raise invalid("Request body must be an object.")
    for k in b:
        if k not in ("maintenance", "name", "build_stack"):
            raise invalid(f"Unknown parameter: {k}.")
    if "maintenance" in b:
        if not isinstance(b["maintenance"], bool):
            raise invalid("Maintenance must be a boolean.")
        if a.maintenance != b["maintenance"]:
            a.maintenance = b["maintenance"]
            a.updated_at = time.time()
            log(f"{a.name}: maintenance {'on' if a.maintenance else 'off'}")
    if "name" in b and b["name"] != a.name:
        if not isinstance(b["name"], str) or not re.match(r"^[a-z][a-z0-9-]{1,28}[a-z0-9]$", b["name"]):
            raise invalid("Name must start with a letter, end with a letter or digit and can only "
                          "contain lowercase letters, digits, and dashes.")
        if STATE.find_app(b["name"]):
            raise invalid("Name is already taken")
        a.name, a.updated_at = b["name"], time.time()
    if "build_stack" in b:
        a.stack = b["build_stack"] if isinstance(b["build_stack"], str) else a.stack
    return Response(200, a.json())


@route("GET", APP + "/collaborators")
def collaborators(c, app):
    c.app(app)
    return c.list([])


@route("GET", APP + "/pipeline-couplings")
def pipeline_coupling(c, app):
    c.app(app)
    raise HerokuError(404, "not_found", "Couldn't find that pipeline coupling.")


# --- formation ------------------------------------------------------------------------------

def parse_quantity(q, current):
    """Integers, numeric strings, and the CLI's relative '+1' / '-1' forms."""
    if isinstance(q, bool):
        raise invalid("Quantity must be an integer.")
    if isinstance(q, int):
        n = q
    elif isinstance(q, str) and re.match(r"^[+-]?\d+$", q.strip()):
        s = q.strip()
        n = current + int(s) if s[0] in "+-" else int(s)
    else:
        raise invalid(f"Invalid quantity: {q!r}.")
    if n < 0:
        raise invalid("Quantity must be a positive integer or zero.")
    if n > MAX_QUANTITY:
        raise invalid(f"Cannot scale to more than {MAX_QUANTITY} dynos per process type.")
    return n


def parse_size(s):
    if not isinstance(s, str) or s.lower() not in SIZE_BY_LOWER:
        raise invalid(f"Invalid dyno size: {s}. Valid sizes: {', '.join(DYNO_SIZES)}.")
    return SIZE_BY_LOWER[s.lower()]


def apply_formation_updates(a, updates):
    """Validates every update first, then applies them all (all or nothing, like Heroku)."""
    planned = []
    for u in updates:
        if not isinstance(u, dict) or "type" not in u:
            raise invalid("Each update must have a type.")
        extra = set(u) - {"type", "quantity", "size"}
        if extra:
            raise invalid(f"Unknown parameter: {sorted(extra)[0]}.")
        f = a.formation.get(u["type"]) or next(
            (x for x in a.formation.values() if x.id == u["type"]), None)
        if f is None:
            raise HerokuError(404, "not_found", f"Couldn't find that process type ({u['type']}).")
        q = parse_quantity(u["quantity"], f.quantity) if "quantity" in u else f.quantity
        size = parse_size(u["size"]) if "size" in u else f.size
        planned.append((f, q, size))
    for f, q, size in planned:
        resized = size != f.size
        f.quantity, f.size, f.updated_at = q, size, time.time()
        if resized:
            for d in list(a.dynos.values()):
                if d.type == f.type and not d.oneoff:
                    d.size = size
                    restart_dyno(d)
        reconcile_formation(a, f.type)
    return [f for f, _, _ in planned]


@route("GET", APP + "/formation")
def formation_list(c, app):
    a = c.app(app)
    return c.list([f.json() for f in a.formation.values()])


@route("GET", APP + "/formation/(?P<ftype>[^/]+)")
def formation_info(c, app, ftype):
    a = c.app(app)
    f = a.formation.get(unquote(ftype)) or next((x for x in a.formation.values() if x.id == ftype), None)
    if not f:
        raise HerokuError(404, "not_found", f"Couldn't find that process type ({ftype}).")
    return Response(200, f.json())


@route("PATCH", APP + "/formation")
def formation_batch(c, app):
    a = c.app(app)
    b = c.json_body()
    if not isinstance(b, dict) or not isinstance(b.get("updates"), list):
        raise invalid("Missing required params: updates.")
    changed = apply_formation_updates(a, b["updates"])
    return Response(200, [f.json() for f in changed])


@route("PATCH", APP + "/formation/(?P<ftype>[^/]+)")
def formation_update(c, app, ftype):
    a = c.app(app)
    b = c.json_body()
    if not isinstance(b, dict):
        raise invalid("Request body must be an object.")
    upd = dict(b)
    upd["type"] = unquote(ftype)
    f = apply_formation_updates(a, [upd])[0]
    return Response(200, f.json())


# --- dynos ----------------------------------------------------------------------------------

def find_dyno(a, ident):
    ident = unquote(ident)
    d = a.dynos.get(ident) or next((x for x in a.dynos.values() if x.id == ident), None)
    if d is None:
        raise HerokuError(404, "not_found", f"Couldn't find that dyno ({ident}).")
    return d


@route("GET", APP + "/dynos")
def dynos_list(c, app):
    a = c.app(app)
    return c.list([d.json() for d in a.dynos.values()])


@route("GET", APP + "/dynos/(?P<dyno>[^/]+)")
def dyno_info(c, app, dyno):
    return Response(200, find_dyno(c.app(app), dyno).json())


@route("POST", APP + "/dynos")
def dyno_create(c, app):
    a = c.app(app)
    b = c.json_body()
    if not isinstance(b, dict) or not isinstance(b.get("command"), str) or not b["command"]:
        raise invalid("Missing required params: command.")
    env = b.get("env") or {}
    if not isinstance(env, dict) or not all(isinstance(v, str) and re.match(r"^\w+$", k)
                                            for k, v in env.items()):
        raise invalid("Invalid env: keys must match ^\\w+$ and values must be strings.")
    size = parse_size(b["size"]) if b.get("size") else "Standard-1X"
    type_ = b.get("type") or "run"
    while True:
        name = f"{type_}.{random.randint(1000, 9999)}"
        if name not in a.dynos:
            break
    ttl = b.get("time_to_live")
    d = Dyno(a, name, type_, size, b["command"], oneoff=True, env=env,
             ttl=float(ttl) if isinstance(ttl, (int, float)) and ttl > 0 else None)
    d.release = a.current_release()
    a.dynos[name] = d
    return Response(201, d.json())


@route("POST", APP + "/dynos/(?P<dyno>[^/]+)/actions/stop")
def dyno_stop(c, app, dyno):
    a = c.app(app)
    d = find_dyno(a, dyno)
    # A one-off dyno goes away; a formation dyno is replaced by the formation (restarted).
    stop_dyno(d, "remove" if d.oneoff else "restart")
    return Response(202, {})


@route("DELETE", APP + "/dynos/(?P<dyno>[^/]+)")
def dyno_restart(c, app, dyno):
    a = c.app(app)
    restart_dyno(find_dyno(a, dyno))
    return Response(202, {})


@route("DELETE", APP + "/dynos")
def dynos_restart_all(c, app):
    a = c.app(app)
    for d in list(a.dynos.values()):
        restart_dyno(d)
    return Response(202, {})


# --- releases -------------------------------------------------------------------------------

def find_release(a, ident):
    ident = unquote(ident)
    for r in a.releases:
        if r.id == ident or str(r.version) == ident.lstrip("v"):
            return r
    raise HerokuError(404, "not_found", "Couldn't find that release.")


@route("GET", APP + "/releases")
def releases_list(c, app):
    a = c.app(app)
    return c.list([r.json() for r in a.releases], ("id", "version"), "version")


@route("GET", APP + "/releases/(?P<rel>[^/]+)")
def release_info(c, app, rel):
    return Response(200, find_release(c.app(app), rel).json())


@route("GET", APP + "/releases/(?P<rel>[^/]+)/config-vars")
def release_config(c, app, rel):
    return Response(200, dict(find_release(c.app(app), rel).config))


# --- config vars ----------------------------------------------------------------------------

@route("GET", APP + "/config-vars")
def config_get(c, app):
    return Response(200, dict(c.app(app).config))


@route("PATCH", APP + "/config-vars")
def config_update(c, app):
    a = c.app(app)
    b = c.json_body()
    if not isinstance(b, dict):
        raise invalid("Config vars must be an object.")
    for k, v in b.items():
        if not re.match(r"^\w+$", k):
            raise invalid(f"Invalid config var name: {k}.")
        if v is not None and not isinstance(v, str):
            raise invalid(f"Config var {k} must be a string or null.")
    owned = a.attachment_vars()
    blocked = sorted(k for k in b if k in owned)
    if blocked:
        raise invalid(f"Cannot overwrite attachment values {', '.join(blocked)}.")
    set_, removed = [], []
    for k, v in b.items():
        if v is None:
            if k in a.config:
                del a.config[k]
                removed.append(k)
        elif a.config.get(k) != v:
            a.config[k] = v
            set_.append(k)
    if set_ or removed:
        desc = (f"Set {', '.join(set_)} config vars" if set_ else "") + \
               ("; " if set_ and removed else "") + \
               (f"Remove {', '.join(removed)} config vars" if removed else "")
        create_release(a, desc, c.account)
    return Response(200, dict(a.config))


# --- add-ons --------------------------------------------------------------------------------

def visible_addons(c):
    return [ad for ad in STATE.addons.values()
            if c.token.may_access(ad.app) or any(c.token.may_access(x.app) for x in ad.attachments())]


@route("GET", "/addons")
def addons_list(c):
    return c.list([ad.json(c.expand()) for ad in visible_addons(c)])


@route("GET", "/addons/(?P<addon>[^/]+)")
def addon_info(c, addon):
    ad = STATE.find_addon(addon)
    if ad is None:
        raise HerokuError(404, "not_found", "Couldn't find that add on.", resource="add_on")
    if ad not in visible_addons(c):
        raise HerokuError(403, "forbidden", f"You do not have access to the app {ad.app.name}.")
    c.check_access(ad.app)
    return Response(200, ad.json(c.expand()))


@route("GET", APP + "/addons")
def app_addons(c, app):
    a = c.app(app)
    return c.list([ad.json(c.expand()) for ad in a.attached_addons()])


@route("GET", APP + "/addons/(?P<addon>[^/]+)")
def app_addon_info(c, app, addon):
    a = c.app(app)
    ad = STATE.find_addon(addon, a)
    if ad is None or ad not in a.attached_addons():
        raise HerokuError(404, "not_found", "Couldn't find that add on.", resource="add_on")
    return Response(200, ad.json(c.expand()))


def pick_database_url():
    if STATE.next_database_urls:
        return STATE.next_database_urls.pop(0)
    return STATE.default_database_url


@route("POST", APP + "/addons")
def addon_create(c, app):
    a = c.app(app)
    b = c.json_body()
    plan = b.get("plan") if isinstance(b, dict) else None
    if isinstance(plan, dict):
        plan = plan.get("name") or plan.get("id")
    if not isinstance(plan, str) or not plan:
        raise invalid("Missing required params: plan.")
    if ":" not in plan:
        plan = plan + ":essential-0"
    if not plan.startswith("heroku-postgresql:"):
        raise HerokuError(422, "invalid_params",
                          f"Couldn't find either the add-on service or the add-on plan of "
                          f"\"{plan}\" (this fake provides heroku-postgresql only).")
    url = pick_database_url()
    if not url:
        raise HerokuError(422, "invalid_params",
                          "The fake has no database for a new heroku-postgresql add-on: give one "
                          "with POST /__fake/next-database-url first.")
    name = (b.get("attachment") or {}).get("name") if isinstance(b.get("attachment"), dict) else None
    if name:
        name = name.upper()
        if not re.match(r"^[A-Z][A-Z0-9_]*$", name):
            raise invalid("Attachment name must start with a letter and contain only letters, "
                          "digits and underscores.")
        if name in {x.name for x in a.attachments()} or name + "_URL" in a.config:
            raise invalid(f"{name} is already attached to {a.name}.")
    addon, att = add_postgres(a, plan, url, c.account, attachment_name=name)
    if isinstance(b.get("name"), str) and re.match(r"^[a-zA-Z][A-Za-z0-9_-]+$", b["name"]):
        if STATE.find_addon(b["name"]) not in (None, addon):
            raise invalid("Name is already taken.")
        addon.name = b["name"]
    j = addon.json()
    j["config_vars"] = [att.config_var]
    return Response(201, j)


@route("DELETE", APP + "/addons/(?P<addon>[^/]+)")
def addon_delete(c, app, addon):
    a = c.app(app)
    ad = STATE.find_addon(addon, a)
    if ad is None or ad.app is not a:
        raise HerokuError(404, "not_found", "Couldn't find that add on.", resource="add_on")
    for att in ad.attachments():
        del STATE.attachments[att.id]
        att.app.config.pop(att.config_var, None)
        create_release(att.app, f"Detach {att.name} (@ref:{ad.name})", c.account)
    del STATE.addons[ad.id]
    ad.state = "deprovisioned"
    return Response(200, ad.json())


@route("POST", "/actions/addons/resolve")
def addons_resolve(c):
    b = c.json_body()
    ident = b.get("addon") if isinstance(b, dict) else None
    if not isinstance(ident, str):
        raise invalid("Missing required params: addon.")
    app = STATE.find_app(b["app"]) if b.get("app") else None
    if b.get("app") and app is None:
        raise HerokuError(404, "not_found", "Couldn't find that app.", resource="app")
    if app:
        c.check_access(app)
    found = STATE.find_addon(ident, app)
    if found and b.get("addon_service") and found.service != b["addon_service"]:
        found = None
    if not found:
        raise HerokuError(404, "not_found", f"Couldn't find that add on ({ident}).",
                          resource="add_on")
    return Response(200, [found.json(c.expand())])


# --- add-on attachments ---------------------------------------------------------------------

def attachment_list_json(c, atts):
    inc = c.include()
    return [att.json(inc) for att in atts]


@route("GET", "/addon-attachments")
def attachments_all(c):
    atts = [x for x in STATE.attachments.values() if c.token.may_access(x.app)]
    return c.list(attachment_list_json(c, atts))


@route("GET", APP + "/addon-attachments")
def attachments_app(c, app):
    a = c.app(app)
    return c.list(attachment_list_json(c, a.attachments()))


@route("GET", APP + "/addon-attachments/(?P<att>[^/]+)")
def attachment_by_app(c, app, att):
    a = c.app(app)
    ident = unquote(att)
    for x in a.attachments():
        if x.id == ident or x.name == ident:
            return Response(200, x.json(c.include()))
    raise HerokuError(404, "not_found", "Couldn't find that add on attachment.",
                      resource="add_on attachment")


@route("GET", "/addons/(?P<addon>[^/]+)/addon-attachments")
def attachments_addon(c, addon):
    ad = STATE.find_addon(addon)
    if ad is None or ad not in visible_addons(c):
        raise HerokuError(404, "not_found", "Couldn't find that add on.", resource="add_on")
    return c.list(attachment_list_json(c, ad.attachments()))


@route("GET", "/addon-attachments/(?P<att>[^/]+)")
def attachment_info(c, att):
    x = STATE.attachments.get(unquote(att))
    if x is None or not c.token.may_access(x.app):
        raise HerokuError(404, "not_found", "Couldn't find that add on attachment.",
                          resource="add_on attachment")
    c.check_access(x.app)
    return Response(200, x.json(c.include()))


@route("POST", "/addon-attachments")
def attachment_create(c):
    b = c.json_body()
    if not isinstance(b, dict) or "addon" not in b or "app" not in b:
        raise invalid("Missing required params: addon, app.")

    def ident(v):
        return (v.get("id") or v.get("name")) if isinstance(v, dict) else v
    a = STATE.find_app(str(ident(b["app"])))
    if a is None:
        raise HerokuError(404, "not_found", "Couldn't find that app.", resource="app")
    c.check_access(a)
    ad = STATE.find_addon(str(ident(b["addon"])))
    if ad is None:
        raise HerokuError(404, "not_found", "Couldn't find that add on.", resource="add_on")
    c.check_access(ad.app)
    name = b.get("name")
    if name is None:
        name = next_color_name(a) if ad.service == "heroku-postgresql" else ad.service.upper()
    if not isinstance(name, str) or not re.match(r"^[A-Za-z][A-Za-z0-9_]*$", name):
        raise invalid("Attachment name must start with a letter and contain only letters, "
                      "digits and underscores.")
    name = name.upper()
    ns = b.get("namespace")
    existing = next((x for x in a.attachments() if x.name == name and x.namespace == ns), None)
    if existing and existing.addon is ad:
        return Response(200, existing.json(c.include()))    # already so: nothing to change
    if existing:
        if b.get("confirm") != a.name:
            raise HerokuError(422, "confirmation_required",
                              f"Attachment {name} already exists on {a.name}. To replace it, "
                              f"confirm with the app name ({a.name}).")
        # replacing: the old add-on must keep another attachment to its billing app
        if existing.app is existing.addon.app and not any(
                x is not existing and x.app is existing.addon.app
                for x in existing.addon.attachments()):
            raise invalid(f"{name} on {a.name} is the last billing attachment to "
                          f"{existing.addon.name}; either remove the add-on entirely or add a "
                          f"new attachment to it before replacing its config vars.")
        del STATE.attachments[existing.id]
        a.config.pop(existing.config_var, None)
    elif name + "_URL" in a.config and name + "_URL" not in a.attachment_vars():
        # A plain config var of that name exists (e.g. DATABASE_URL set by hand): refuse rather
        # than silently overwrite it (real Heroku's behaviour here is not documented).
        raise invalid(f"Cannot attach {ad.name} as {name}: the config var {name}_URL is already "
                      f"set on {a.name}. Unset it first.")
    att = attach(a, ad, name, c.account, namespace=ns)
    return Response(201, att.json(c.include()))


@route("DELETE", "/addon-attachments/(?P<att>[^/]+)")
def attachment_delete(c, att):
    x = STATE.attachments.get(unquote(att))
    if x is None:
        raise HerokuError(404, "not_found", "Couldn't find that add on attachment.",
                          resource="add_on attachment")
    c.check_access(x.app)
    billing = x.addon.app
    if x.app is billing and not any(o is not x and o.app is billing for o in x.addon.attachments()):
        raise invalid(f"Cannot destroy last attachment to billing app for resource {x.addon.name}")
    detach(x, c.account)
    return Response(200, x.json())


@route("POST", "/actions/addon-attachments/resolve")
def attachments_resolve(c):
    b = c.json_body()
    ident = b.get("addon_attachment") if isinstance(b, dict) else None
    if not isinstance(ident, str):
        raise invalid("Missing required params: addon_attachment.")
    app = None
    if b.get("app"):
        app = STATE.find_app(b["app"])
        if app is None:
            raise HerokuError(404, "not_found", "Couldn't find that app.", resource="app")
        c.check_access(app)
    if "::" in ident:
        other, ident = ident.split("::", 1)
        app = STATE.find_app(other)
        if app is None:
            raise HerokuError(404, "not_found", "Couldn't find that app.", resource="app")
        c.check_access(app)
    pool = app.attachments() if app else [x for x in STATE.attachments.values()
                                          if c.token.may_access(x.app)]
    want = ident.upper()
    matches = [x for x in pool if x.name == want or x.config_var == want or x.id == ident]
    if not matches:   # an add-on name or id resolves to its attachments on the app
        matches = [x for x in pool if x.addon.name == ident or x.addon.id == ident]
    if b.get("addon_service"):
        matches = [x for x in matches if x.addon.service == b["addon_service"]]
    if not matches:
        raise HerokuError(404, "not_found", f"Couldn't find that add on attachment ({ident}).",
                          resource="add_on attachment")
    return Response(200, attachment_list_json(c, matches))


# --- misc read-only catalogue used by the CLI ------------------------------------------------

@route("GET", "/regions")
def regions(c):
    now = iso(time.time())
    out = []
    for name, loc, prov in (("us", "United States", "us-east-1"), ("eu", "Europe", "eu-west-1")):
        out.append({"country": loc, "created_at": now, "description": loc, "id": stable_id("region", name),
                    "locale": "Virginia" if name == "us" else "Dublin", "name": name,
                    "private_capable": False,
                    "provider": {"name": "amazon-web-services", "region": prov},
                    "updated_at": now})
    return c.list(out)


@route("GET", "/stacks")
def stacks(c):
    now = iso(time.time())
    return c.list([{"default": n == "heroku-24", "created_at": now, "id": stable_id("stack", n),
                    "name": n, "state": "supported", "updated_at": now}
                   for n in ("heroku-22", "heroku-24")])


# ---------------------------------------------------------------------------------------------
# Data API (Heroku Postgres): /client/v11/...
# ---------------------------------------------------------------------------------------------

def data_addon(c, ident):
    ad = STATE.find_addon(ident)
    if ad is None:
        raise HerokuError(404, "not_found", "Couldn't find that database.")
    if not (c.token.may_access(ad.app) or any(c.token.may_access(x.app) for x in ad.attachments())):
        raise HerokuError(403, "forbidden", f"You do not have access to the app {ad.app.name}.")
    c.check_access(ad.app)
    return ad


def database_info(ad):
    facts = pg_query_info(ad.database_url, STATE.netmap)
    plan_short = ad.plan.split(":", 1)[1]
    u = urlsplit(ad.database_url)
    nb = facts["bytes"] if facts else 0
    conns = f"{facts['connections']}/{facts['max_connections']}" if facts else "0/0"
    version = facts["version"] if facts else "unknown"
    info = [
        {"name": "Plan", "values": [plan_short.replace("-", " ").title()]},
        {"name": "Status", "values": ["Available" if facts else "Unavailable"]},
        {"name": "Data Size", "values": [human_bytes(nb)]},
        {"name": "Tables", "values": [facts["tables"] if facts else 0]},
        {"name": "PG Version", "values": [version]},
        {"name": "Connections", "values": [conns]},
        {"name": "Connection Pooling", "values": ["Available"]},
        {"name": "Credentials", "values": [1]},
        {"name": "Fork/Follow", "values": ["Available"]},
        {"name": "Rollback", "values": ["earliest from " + iso(ad.created_at)]},
        {"name": "Created", "values": [time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ad.created_at))]},
        {"name": "Region", "values": ["us-east-1"]},
        {"name": "Data Encryption", "values": ["In Use"]},
        {"name": "Continuous Protection", "values": ["On" if not plan_short.startswith("essential") else "Off"]},
        {"name": "Maintenance", "values": ["not required"]},
        {"name": "Maintenance window", "values": ["Wednesdays 02:00 to 06:00 UTC"]},
    ]
    return {"addon_id": ad.id, "name": ad.name, "created_at": iso(ad.created_at),
            "plan": {"id": stable_id("plan", ad.plan), "name": ad.plan},
            "database_name": facts["database"] if facts else unquote(u.path.lstrip("/")),
            "database_user": facts["user"] if facts else unquote(u.username or ""),
            "resource_url": f"{u.hostname}:{u.port or 5432}",
            "num_bytes": nb, "num_connections": facts["connections"] if facts else 0,
            "num_connections_waiting": 0, "num_tables": facts["tables"] if facts else 0,
            "postgres_version": version, "following": None, "leader": None,
            "is_in_recovery?": False, "waiting?": False, "hot_standby?": False,
            "info": info}


@route("GET", "/client/v11/databases/(?P<addon>[^/]+)", "data")
def data_db_info(c, addon):
    ad = data_addon(c, addon)
    STATE.lock.release()          # querying the database must not block the whole fake
    try:
        return Response(200, database_info(ad))
    finally:
        STATE.lock.acquire()


@route("GET", "/client/v11/databases/(?P<addon>[^/]+)/wait_status", "data")
def data_wait_status(c, addon):
    data_addon(c, addon)
    return Response(200, {"waiting?": False, "message": "Available", "error?": False})


@route("POST", "/client/v11/databases/(?P<addon>[^/]+)/backups", "data")
def data_capture(c, addon):
    ad = data_addon(c, addon)
    app = ad.app
    own = [x for x in ad.attachments() if x.app is app]
    from_name = ("DATABASE" if any(x.name == "DATABASE" for x in own)
                 else (own[0].name if own else ad.name))
    num = max([t.num for t in app.transfers] + [0]) + 1
    t = Transfer(app, ad, num, from_name)
    t.file = os.path.join(SUPERVISOR.data_dir, f"{app.id}-{t.uuid}.dump")
    n_fail = STATE.backup_faults.get(app.name, 0)
    if n_fail:
        t.fail = True
        STATE.backup_faults[app.name] = n_fail - 1
    app.transfers.append(t)
    threading.Thread(target=run_backup, args=(t,), daemon=True, name=f"backup-{t.label}").start()
    return Response(201, t.json())


def find_transfer(c, app, ident):
    a = c.app(app)
    ident = unquote(ident)
    for t in a.transfers:
        if t.deleted_at:
            continue
        if t.uuid == ident or str(t.num) == ident or t.label == ident:
            return a, t
    raise HerokuError(404, "not_found", "Couldn't find that transfer.")


@route("GET", "/client/v11/apps/(?P<app>[^/]+)/transfers", "data")
def data_transfers(c, app):
    a = c.app(app)
    return Response(200, [t.json() for t in a.transfers if not t.deleted_at])


@route("GET", "/client/v11/apps/(?P<app>[^/]+)/transfers/(?P<tid>[^/]+)", "data")
def data_transfer(c, app, tid):
    _, t = find_transfer(c, app, tid)
    return Response(200, t.json(verbose=(c.query.get("verbose") == ["true"])))


@route("DELETE", "/client/v11/apps/(?P<app>[^/]+)/transfers/(?P<tid>[^/]+)", "data")
def data_transfer_delete(c, app, tid):
    _, t = find_transfer(c, app, tid)
    if not t.finished_at:
        raise invalid("Cannot delete a backup that is still running.")
    t.deleted_at = time.time()
    if t.file and os.path.exists(t.file):
        os.unlink(t.file)
    return Response(200, t.json())


@route("POST", "/client/v11/apps/(?P<app>[^/]+)/transfers/(?P<tid>[^/]+)/actions/cancel", "data")
def data_transfer_cancel(c, app, tid):
    _, t = find_transfer(c, app, tid)
    if not t.finished_at:
        t.canceled_at = time.time()
        if t.proc and t.proc.poll() is None:
            try:
                os.killpg(t.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    return Response(200, t.json())


@route("POST", "/client/v11/apps/(?P<app>[^/]+)/transfers/(?P<tid>[^/]+)/actions/public-url", "data")
def data_public_url(c, app, tid):
    _, t = find_transfer(c, app, tid)
    if not t.succeeded:
        raise HerokuError(422, "invalid_params", "That backup has not finished successfully.")
    secret = secrets.token_urlsafe(24)              # each call signs a fresh URL
    now = time.time()
    t.public_urls[secret] = now + PUBLIC_URL_TTL
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    url = (f"http://{SERVER_INFO['public_host']}/__public/backups/{secret}/{t.uuid}"
           f"?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date={amz_date}"
           f"&X-Amz-Expires={PUBLIC_URL_TTL}&X-Amz-SignedHeaders=host"
           f"&X-Amz-Signature={hashlib.sha256(secret.encode()).hexdigest()}")
    return Response(200, {"url": url, "expires_at": iso(t.public_urls[secret])})


SERVER_INFO = {"public_host": "127.0.0.1:4568"}


# ---------------------------------------------------------------------------------------------
# The public backup URLs (an S3 stand-in: no Heroku auth; GET, HEAD and Range)
# ---------------------------------------------------------------------------------------------

def s3_error(status, code, message):
    xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
           f"<Message>{message}</Message><RequestId>{secrets.token_hex(8).upper()}</RequestId>"
           f"</Error>").encode()
    return Response(status, raw=xml, headers={"Content-Type": "application/xml"})


def serve_public(h, method, path, query, auth_state):
    m = re.match(r"^/__public/backups/([^/]+)/([^/]+)$", path)
    if method not in ("GET", "HEAD") or not m:
        return s3_error(405 if m else 404, "MethodNotAllowed" if m else "NoSuchKey",
                        "The specified method is not allowed against this resource." if m
                        else "The specified key does not exist.")
    with STATE.lock:
        t = next((t for a in STATE.apps.values() for t in a.transfers
                  if m.group(1) in t.public_urls and t.uuid == m.group(2)), None)
    if t is None or t.deleted_at:
        return s3_error(403, "AccessDenied", "Access Denied")
    if h.headers.get("Authorization"):
        # S3 refuses a request carrying both a presigned query and an Authorization header.
        return s3_error(400, "InvalidArgument",
                        "Only one auth mechanism allowed; only the X-Amz-Algorithm query "
                        "parameter, Signature query string parameter or the Authorization header "
                        "should be specified")
    if time.time() > t.public_urls[m.group(1)]:
        return s3_error(403, "AccessDenied", "Request has expired")
    size = os.path.getsize(t.file)
    etag = '"' + hashlib.md5(f"{t.uuid}:{size}".encode()).hexdigest() + '"'
    start, end, status = 0, size - 1, 200
    rng = h.headers.get("Range")
    if rng:
        rm = re.match(r"^bytes=(\d*)-(\d*)$", rng.strip())
        if not rm or (rm.group(1) == "" and rm.group(2) == ""):
            return s3_error(416, "InvalidRange", "The requested range is not satisfiable")
        if rm.group(1) == "":
            start = max(0, size - int(rm.group(2)))
        else:
            start = int(rm.group(1))
            end = min(size - 1, int(rm.group(2))) if rm.group(2) else size - 1
        if start >= size or start > end:
            return s3_error(416, "InvalidRange", "The requested range is not satisfiable")
        status = 206
    h.send_response(status)
    h.send_header("Content-Type", "application/octet-stream")
    h.send_header("Content-Length", str(end - start + 1))
    h.send_header("Accept-Ranges", "bytes")
    h.send_header("ETag", etag)
    h.send_header("Last-Modified", time.strftime("%a, %d %b %Y %H:%M:%S GMT",
                                                 time.gmtime(t.finished_at)))
    if status == 206:
        h.send_header("Content-Range", f"bytes {start}-{end}/{size}")
    h.end_headers()
    h._streamed_status = status
    if method == "GET":
        with open(t.file, "rb") as f:
            f.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = f.read(min(1 << 20, left))
                if not chunk:
                    break
                try:
                    h.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    break
                left -= len(chunk)
    return None


# ---------------------------------------------------------------------------------------------
# Admin API (/__fake/..., no auth)
# ---------------------------------------------------------------------------------------------

def admin_app(name):
    a = STATE.find_app(name)
    if a is None:
        raise HerokuError(404, "not_found", f"no app {name}")
    return a


SETTING_KEYS = ("dyno_start_seconds", "dyno_stop_grace_seconds", "release_seconds",
                "backup_seconds", "crash_restart_seconds")


@route("GET", "/__fake/health", "admin")
def admin_health(c):
    return Response(200, {"ok": True, "fake": "heroku", "pid": os.getpid()})


@route("POST", "/__fake/apps", "admin")
def admin_create_app(c):
    b = c.json_body()
    name = b.get("name")
    if not isinstance(name, str) or not re.match(r"^[a-z][a-z0-9-]{1,28}[a-z0-9]$", name):
        raise invalid("name is required and must be a valid Heroku app name")
    if STATE.find_app(name):
        raise invalid(f"app {name} already exists")
    owner = STATE.account(b.get("owner") or DEFAULT_EMAIL)
    settings = {k: float(b[k]) for k in SETTING_KEYS if k in b}
    a = App(name, owner, b.get("region", "us"), b.get("stack", "heroku-24"), settings)
    STATE.apps[a.id] = a
    a.maintenance = bool(b.get("maintenance", False))
    for f in b.get("formation") or []:
        ftype = f["type"]
        a.formation[ftype] = Formation(a, ftype, 0, parse_size(f.get("size", "Standard-1X")),
                                       f.get("command") or "sleep infinity")
    for k, v in (b.get("config_vars") or {}).items():
        a.config[k] = str(v)
    create_release(a, "Initial release", owner, immediate=True)
    dbs = list(b.get("databases") or [])
    if b.get("database_url"):
        dbs.insert(0, {"url": b["database_url"], "plan": b.get("addon_plan"),
                       "attachment_name": b.get("attachment_name")})
    for db in dbs:
        add_postgres(a, db.get("plan") or "heroku-postgresql:standard-0", db["url"], owner,
                     attachment_name=db.get("attachment_name"), immediate=True)
    if b.get("config_vars"):
        create_release(a, f"Set {', '.join(b['config_vars'])} config vars", owner, immediate=True)
    for f in b.get("formation") or []:
        a.formation[f["type"]].quantity = parse_quantity(f.get("quantity", 0), 0)
        reconcile_formation(a, f["type"])
    return Response(201, a.json())


@route("POST", "/__fake/apps/(?P<app>[^/]+)/addons", "admin")
def admin_add_addon(c, app):
    a = admin_app(app)
    b = c.json_body()
    if not b.get("database_url"):
        raise invalid("database_url is required")
    addon, att = add_postgres(a, b.get("plan") or "heroku-postgresql:standard-0",
                              b["database_url"], a.owner,
                              attachment_name=b.get("attachment_name"),
                              immediate=bool(b.get("immediate", True)))
    return Response(201, {"addon": addon.json(), "attachment": att.json()})


@route("POST", "/__fake/apps/(?P<app>[^/]+)/settings", "admin")
def admin_settings(c, app):
    a = admin_app(app)
    b = c.json_body()
    for k in SETTING_KEYS:
        if k in b:
            a.settings[k] = float(b[k])
    if "formation_commands" in b:   # {"web": "cmd"}: commands take effect on the next spawn
        for t, cmd in b["formation_commands"].items():
            if t in a.formation:
                a.formation[t].command = cmd
            else:
                a.formation[t] = Formation(a, t, 0, "Standard-1X", cmd)
    return Response(200, dict(a.settings))


def dump_app(a):
    return {
        "app": a.json(),
        "maintenance": a.maintenance,
        "settings": dict(a.settings),
        "formation": [dict(f.json(), command=f.command) for f in a.formation.values()],
        "dynos": [dict(d.json(), pid=(d.proc.pid if d.proc and d.proc.poll() is None else None),
                       port=d.port, phase=d.phase, exit_status=d.exit_status)
                  for d in a.dynos.values()],
        "config_vars": {k: redact(v) for k, v in a.config.items()},
        "config_var_names": list(a.config),
        "addons": [dict(ad.json(), database_url=redact(ad.database_url))
                   for ad in a.attached_addons()],
        "attachments": [x.json() for x in a.attachments()],
        "releases": [r.json() for r in a.releases],
        "transfers": [t.json() for t in a.transfers],
        "dyno_log": os.path.join(SUPERVISOR.dyno_log_dir, f"{a.name}.log"),
    }


@route("GET", "/__fake/apps/(?P<app>[^/]+)/state", "admin")
def admin_state(c, app):
    return Response(200, dump_app(admin_app(app)))


@route("GET", "/__fake/apps/(?P<app>[^/]+)/config-vars", "admin")
def admin_config_plain(c, app):
    # Unredacted config for tests that must compare a DATABASE_URL exactly.
    return Response(200, dict(admin_app(app).config))


@route("POST", "/__fake/faults", "admin")
def admin_add_fault(c):
    b = c.json_body()
    if "release_status" in b:
        STATE.release_faults.setdefault(b["app"], []).extend(
            [b["release_status"]] * int(b.get("times", 1)))
        return Response(201, {"release_faults": STATE.release_faults})
    if "backup_status" in b:
        STATE.backup_faults[b["app"]] = STATE.backup_faults.get(b["app"], 0) + int(b.get("times", 1))
        return Response(201, {"backup_faults": STATE.backup_faults})
    f = {"method": b.get("method"), "path_regex": b.get("path_regex"),
         "status": b.get("status", 500), "id": b.get("id", "internal_server_error"),
         "message": b.get("message", "Internal server error."),
         "times": b.get("times", 1), "after": int(b.get("after", 0)),
         "when": b.get("when", "before"), "delay_seconds": b.get("delay_seconds")}
    if f["path_regex"]:
        re.compile(f["path_regex"])
    STATE.faults.append(f)
    return Response(201, f)


@route("GET", "/__fake/faults", "admin")
def admin_list_faults(c):
    return Response(200, {"faults": STATE.faults, "release_faults": STATE.release_faults,
                          "backup_faults": STATE.backup_faults})


@route("DELETE", "/__fake/faults", "admin")
def admin_clear_faults(c):
    STATE.faults, STATE.release_faults, STATE.backup_faults = [], {}, {}
    return Response(200, {})


@route("POST", "/__fake/rate-limit", "admin")
def admin_rate_limit(c):
    b = c.json_body()
    if "capacity" in b:
        STATE.rate["capacity"] = int(b["capacity"])
    if "refill_per_second" in b:
        STATE.rate["refill"] = float(b["refill_per_second"])
    if "remaining" in b:
        now = time.time()
        for acc in STATE.accounts.values():
            STATE.buckets[acc.id] = [float(b["remaining"]), now]
    return Response(200, {"capacity": STATE.rate["capacity"],
                          "refill_per_second": STATE.rate["refill"],
                          "remaining": {a.email: STATE.remaining(a) for a in STATE.accounts.values()}})


@route("POST", "/__fake/tokens", "admin")
def admin_tokens(c):
    b = c.json_body()
    if not isinstance(b.get("token"), str) or not b["token"]:
        raise invalid("token is required")
    acc = STATE.account(b.get("email") or DEFAULT_EMAIL)
    STATE.tokens[b["token"]] = Token(b["token"], acc, bool(b.get("two_factor_required")),
                                     bool(b.get("expired")), b.get("apps", ["*"]),
                                     b.get("two_factor_code"))
    return Response(201, {"email": acc.email, "account_id": acc.id})


@route("DELETE", "/__fake/tokens/(?P<tok>[^/]+)", "admin")
def admin_token_delete(c, tok):
    STATE.tokens.pop(unquote(tok), None)
    return Response(200, {})


@route("GET", "/__fake/network", "admin")
def admin_network_get(c):
    return Response(200, STATE.netmap)


@route("POST", "/__fake/network", "admin")
def admin_network(c):
    b = c.json_body()
    for k, v in b.items():
        if v is None:
            STATE.netmap.pop(k, None)
        else:
            STATE.netmap[k] = v
    return Response(200, STATE.netmap)


@route("DELETE", "/__fake/network", "admin")
def admin_network_clear(c):
    STATE.netmap = {}
    return Response(200, {})


@route("POST", "/__fake/next-database-url", "admin")
def admin_next_db(c):
    b = c.json_body()
    if b.get("default"):
        STATE.default_database_url = b["url"]
    else:
        STATE.next_database_urls.append(b["url"])
    return Response(200, {"queued": len(STATE.next_database_urls),
                          "default_set": STATE.default_database_url is not None})


@route("GET", "/__fake/requests", "admin")
def admin_requests(c):
    return Response(200, list(STATE.requests))


@route("DELETE", "/__fake/requests", "admin")
def admin_requests_clear(c):
    STATE.requests = []
    return Response(200, {})


@route("POST", "/__fake/reset", "admin")
def admin_reset(c):
    apps = list(STATE.apps.values())
    kill_everything_of(apps)
    for a in apps:
        for t in a.transfers:
            if t.file and os.path.exists(t.file):
                os.unlink(t.file)
    STATE.reset()
    return Response(200, {})


@route("GET", "/__fake/state", "admin")
def admin_all_state(c):
    return Response(200, {"apps": [dump_app(a) for a in STATE.apps.values()],
                          "network": STATE.netmap,
                          "rate_limit": {"capacity": STATE.rate["capacity"],
                                         "refill_per_second": STATE.rate["refill"]}})


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------

def main():
    global SUPERVISOR
    p = argparse.ArgumentParser(description="fake Heroku Platform + data API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=int(os.environ.get("FAKE_HEROKU_PORT", 4567)))
    p.add_argument("--public-port", type=int, default=None,
                   help="port of the public backup URLs (default: port + 1)")
    p.add_argument("--pid-file")
    p.add_argument("--data-dir", help="where dumps and dyno logs go (default: a temp dir)")
    args = p.parse_args()
    public_port = args.public_port or args.port + 1

    data_dir = args.data_dir or tempfile.mkdtemp(prefix="fake-heroku-")
    own_data_dir = args.data_dir is None
    os.makedirs(data_dir, exist_ok=True)
    SUPERVISOR = Supervisor(data_dir)
    SERVER_INFO["public_host"] = f"{args.host}:{public_port}"

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.allow_reuse_address = True
    api = ThreadingHTTPServer((args.host, args.port), Handler)
    public_handler = type("PublicHandler", (Handler,), {"public_only": True})
    public = ThreadingHTTPServer((args.host, public_port), public_handler)

    SUPERVISOR.start()
    done = threading.Event()

    def shutdown(signum, frame):
        if done.is_set():
            return
        done.set()
        log(f"signal {signum}: stopping dynos and servers")
        threading.Thread(target=api.shutdown, daemon=True).start()
        threading.Thread(target=public.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    signal.signal(signal.SIGHUP, shutdown)
    threading.Thread(target=public.serve_forever, daemon=True, name="public").start()
    if args.pid_file:
        with open(args.pid_file, "w") as f:
            f.write(str(os.getpid()))
    log(f"listening on http://{args.host}:{args.port} (public backup URLs on "
        f"http://{args.host}:{public_port}); data dir {data_dir}")
    try:
        api.serve_forever(poll_interval=0.2)
    finally:
        SUPERVISOR.kill_all()
        api.server_close()
        public.server_close()
        if own_data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
        if args.pid_file:
            try:
                os.unlink(args.pid_file)
            except OSError:
                pass
        log("stopped")


if __name__ == "__main__":
    main()
