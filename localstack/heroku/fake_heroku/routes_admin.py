"""Admin API (/__fake/..., no auth): what tests use to set the fake up, inspect it, inject
faults and reset it."""

import os
import re
import time
from urllib.parse import unquote

from . import supervisor
from .addon_jobs import start_autoscaler, start_scheduler
from .model import STATE, App, Formation, Token
from .ops import add_postgres, attach, create_release, next_color_name, reconcile_formation
from .ops import remove_addon
from .routes_dynos import parse_quantity, parse_size
from .routing import Response, route
from .supervisor import kill_everything_of
from .util import DEFAULT_EMAIL, HerokuError, invalid, redact, stable_id


def admin_app(name):
    a = STATE.find_app(name)
    if a is None:
        raise HerokuError(404, "not_found", f"no app {name}")
    return a


SETTING_KEYS = ("dyno_start_seconds", "dyno_stop_grace_seconds", "release_seconds",
                "backup_seconds", "crash_restart_seconds", "release_phase_timeout_seconds",
                "complete_linger_seconds")


def admin_addon(ident):
    ad = STATE.find_addon(str(ident))
    if ad is None:
        raise HerokuError(404, "not_found", f"no add-on {ident}")
    return ad


def check_postgres_extras(b):
    creds = b.get("credentials") or {}
    if not isinstance(creds, dict) or not all(isinstance(v, str) for v in creds.values()):
        raise invalid('credentials must be {"name": "postgres://..."}')


def setup_postgres_extras(a, addon, b):
    """credentials and pooler of an admin-created Postgres add-on (body b, checked before)."""
    addon.credentials.update(b.get("credentials") or {})
    if b.get("pooler"):
        if isinstance(b["pooler"], str):
            addon.pooler_url = b["pooler"]
        attach(a, addon, "DATABASE_CONNECTION_POOL", a.owner,
               namespace="connection-pooling:default", immediate=True)


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
    to_attach = None
    if b.get("attach_addon"):
        spec = b["attach_addon"]
        if not isinstance(spec, dict) or not spec.get("addon"):
            raise invalid('attach_addon must be {"addon": "<name or id>", "as": "DATABASE"}')
        to_attach = admin_addon(spec["addon"])
    dbs = list(b.get("databases") or [])
    if b.get("database_url"):
        dbs.insert(0, {"url": b["database_url"], "plan": b.get("addon_plan"),
                       "attachment_name": b.get("attachment_name"),
                       "credentials": b.get("credentials"), "pooler": b.get("pooler")})
    for db in dbs:
        check_postgres_extras(db)
    STATE.apps[a.id] = a
    a.maintenance = bool(b.get("maintenance", False))
    if b.get("space"):
        sp = b["space"] if isinstance(b["space"], dict) else {"name": str(b["space"])}
        a.space = {"id": stable_id("space", sp["name"]), "name": sp["name"],
                   "shield": bool(sp.get("shield", False))}
    for f in b.get("formation") or []:
        ftype = f["type"]
        a.formation[ftype] = Formation(a, ftype, 0, parse_size(f.get("size", "Standard-1X")),
                                       f.get("command") or "sleep infinity")
    for k, v in (b.get("config_vars") or {}).items():
        a.config[k] = str(v)
    create_release(a, "Initial release", owner, immediate=True)
    for db in dbs:
        addon, _ = add_postgres(a, db.get("plan") or "heroku-postgresql:standard-0", db["url"],
                                owner, attachment_name=db.get("attachment_name"), immediate=True)
        setup_postgres_extras(a, addon, db)
    if to_attach is not None:
        as_ = (b["attach_addon"].get("as") or
               ("DATABASE" if "DATABASE_URL" not in a.config else next_color_name(a))).upper()
        attach(a, to_attach, as_, owner, namespace=b["attach_addon"].get("namespace"),
               immediate=True)
    if b.get("config_vars"):
        create_release(a, f"Set {', '.join(b['config_vars'])} config vars", owner, immediate=True)
    for f in b.get("formation") or []:
        q = parse_quantity(f.get("quantity", 0), 0)
        a.formation[f["type"]].quantity = 0 if f["type"] == "release" else q
        reconcile_formation(a, f["type"])
    return Response(201, a.json())


@route("POST", "/__fake/apps/(?P<app>[^/]+)/addons", "admin")
def admin_add_addon(c, app):
    a = admin_app(app)
    b = c.json_body()
    leader = admin_addon(b["follows"]) if b.get("follows") else None
    url = b.get("database_url") or (leader.database_url if leader else None)
    if not url:
        raise invalid("database_url is required (or follows)")
    check_postgres_extras(b)
    addon, att = add_postgres(a, b.get("plan") or "heroku-postgresql:standard-0", url, a.owner,
                              attachment_name=b.get("attachment_name"),
                              immediate=bool(b.get("immediate", True)), color=leader is not None)
    addon.leader = leader
    setup_postgres_extras(a, addon, b)
    return Response(201, {"addon": addon.json(), "attachment": att.json()})


@route("POST", "/__fake/apps/(?P<app>[^/]+)/scheduler", "admin")
def admin_scheduler(c, app):
    a = admin_app(app)
    b = c.json_body()
    if not isinstance(b.get("command"), str) or not b["command"]:
        raise invalid("command is required")
    every = float(b.get("every_seconds", 60))
    if every <= 0:
        raise invalid("every_seconds must be positive")
    addon = start_scheduler(a, b["command"], every, parse_size(b.get("size", "Standard-1X")),
                            b.get("plan") or "scheduler:standard")
    return Response(201, {"addon": addon.json()})


@route("DELETE", "/__fake/apps/(?P<app>[^/]+)/scheduler", "admin")
def admin_scheduler_delete(c, app):
    a = admin_app(app)
    if a.scheduler:
        remove_addon(a.scheduler["addon"], a.owner)
    return Response(200, {})


@route("POST", "/__fake/apps/(?P<app>[^/]+)/autoscaler", "admin")
def admin_autoscaler(c, app):
    a = admin_app(app)
    b = c.json_body()
    if b.get("type") not in a.formation:
        raise invalid(f"type must be a process type of {a.name}")
    every = float(b.get("every_seconds", 60))
    if every <= 0:
        raise invalid("every_seconds must be positive")
    addon = start_autoscaler(a, b["type"], parse_quantity(b.get("quantity", 1), 0), every,
                             b.get("service") or "hirefire-resource")
    return Response(201, {"addon": addon.json()})


@route("DELETE", "/__fake/apps/(?P<app>[^/]+)/autoscaler", "admin")
def admin_autoscaler_delete(c, app):
    a = admin_app(app)
    if a.autoscaler:
        remove_addon(a.autoscaler["addon"], a.owner)
    return Response(200, {})


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
        "addons": [dict(ad.json(), database_url=redact(ad.database_url) if ad.database_url
                        else None, follows=ad.leader.name if ad.leader else None,
                        credentials=sorted(ad.credentials))
                   for ad in a.attached_addons()],
        "scheduler": ({k: v for k, v in a.scheduler.items() if k != "addon"}
                      if a.scheduler else None),
        "autoscaler": ({k: v for k, v in a.autoscaler.items() if k != "addon"}
                       if a.autoscaler else None),
        "attachments": [x.json() for x in a.attachments()],
        "releases": [r.json() for r in a.releases],
        "transfers": [t.json() for t in a.transfers],
        "dyno_log": os.path.join(supervisor.SUPERVISOR.dyno_log_dir, f"{a.name}.log"),
    }


@route("POST", "/__fake/apps/(?P<app>[^/]+)/database-url", "admin")
def admin_database_url(c, app):
    """Heroku changes a database's URL (credential rotation, maintenance, failover): body
    {"url": NEW, "attachment": "DATABASE"}. The add-on behind that attachment of the app gets
    the new URL; every attachment of it with the default credential follows (its NAME_URL
    changes on each app), and each app gets a release, without its release phase, as add-on
    config changes do; the dynos restart on it. Answers the apps released, never the URL."""
    a = admin_app(app)
    b = c.json_body()
    if not isinstance(b.get("url"), str) or not b["url"]:
        raise invalid("url is required")
    name = b.get("attachment") or "DATABASE"
    att = next((x for x in a.attachments() if x.name == name), None)
    if att is None or not att.addon.is_postgres:
        raise invalid(f"app {app} has no Postgres attachment {name}")
    addon = att.addon
    addon.database_url = b["url"]
    addon.updated_at = time.time()
    released = []
    for other in addon.attachments():
        if other.namespace or not other.config_var:
            continue
        other.app.config[other.config_var] = other.url
        other.updated_at = time.time()
        create_release(other.app, f"Update {other.name} by {addon.name}", other.app.owner,
                       release_phase=False)
        released.append(other.app.name)
    return Response(200, {"addon": addon.name, "released": sorted(set(released))})


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
    status = int(b.get("expired_status", 401))
    if status not in (401, 403):
        raise invalid("expired_status must be 401 or 403")
    expires_at = time.time() + float(b["expires_in"]) if b.get("expires_in") is not None else None
    tok = Token(b["token"], acc, bool(b.get("two_factor_required")), bool(b.get("expired")),
                b.get("apps", ["*"]), b.get("two_factor_code"), expires_at, status)
    STATE.tokens[b["token"]] = tok
    return Response(201, {"email": acc.email, "account_id": acc.id, "authorization_id": tok.id,
                          "expires_in": tok.expires_in()})


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
