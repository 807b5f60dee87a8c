"""Data API (Heroku Postgres): /client/v11/... (pg:info with the follower relation, connection
pooling, backups and their public URLs)."""

import hashlib
import os
import re
import secrets
import signal
import threading
import time
from urllib.parse import unquote, urlsplit

from . import supervisor
from .model import STATE, Transfer
from .ops import attach
from .pg import human_bytes, pg_query_info, url_without_credentials
from .routing import Response, route
from .supervisor import run_backup
from .util import PUBLIC_URL_TTL, HerokuError, invalid, iso, stable_id


def data_addon(c, ident):
    ad = STATE.find_addon(ident)
    if ad is None or not ad.is_postgres:
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
        {"name": "Credentials", "values": [1 + len(ad.credentials)]},
        {"name": "Fork/Follow", "values": ["Available"]},
        {"name": "Rollback", "values": ["earliest from " + iso(ad.created_at)]},
        {"name": "Created", "values": [time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ad.created_at))]},
        {"name": "Region", "values": ["us-east-1"]},
        {"name": "Data Encryption", "values": ["In Use"]},
        {"name": "Continuous Protection", "values": ["On" if not plan_short.startswith("essential") else "Off"]},
    ]
    # The follower relation, as the real data API gives it: URLs without credentials that
    # the CLI resolves to attachment names (resolve_db_name); `following` is the leader's URL,
    # `leader` names the leader add-on.
    following = leader = None
    if ad.leader is not None:
        following = url_without_credentials(ad.leader.database_url)
        leader = {"addon_id": ad.leader.id, "name": ad.leader.name}
        info.append({"name": "Following", "resolve_db_name": True, "values": [following]})
        info.append({"name": "Behind By", "values": ["0 commits"]})
    followers = ad.followers()
    if followers:
        info.append({"name": "Followers", "resolve_db_name": True,
                     "values": [url_without_credentials(f.database_url) for f in followers]})
    info += [{"name": "Maintenance", "values": ["not required"]},
             {"name": "Maintenance window", "values": ["Wednesdays 02:00 to 06:00 UTC"]}]
    return {"addon_id": ad.id, "name": ad.name, "created_at": iso(ad.created_at),
            "plan": {"id": stable_id("plan", ad.plan), "name": ad.plan},
            "database_name": facts["database"] if facts else unquote(u.path.lstrip("/")),
            "database_user": facts["user"] if facts else unquote(u.username or ""),
            "resource_url": f"{u.hostname}:{u.port or 5432}",
            "num_bytes": nb, "num_connections": facts["connections"] if facts else 0,
            "num_connections_waiting": 0, "num_tables": facts["tables"] if facts else 0,
            "postgres_version": version, "following": following, "leader": leader,
            "is_in_recovery?": following is not None, "waiting?": False,
            "hot_standby?": following is not None, "info": info}


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


@route("POST", "/client/v11/databases/(?P<addon>[^/]+)/connection-pooling", "data")
def data_connection_pooling(c, addon):
    """`heroku pg:connection-pooling:attach`: {"app", "credential": "default", "name"?} -> 201
    and the attachment (default name DATABASE_CONNECTION_POOL, namespace
    connection-pooling:CREDENTIAL). Its URL is the pooler's: the database URL itself here
    (a PgBouncer in front of the same database on Heroku)."""
    ad = data_addon(c, addon)
    b = c.json_body()
    app_ident = b.get("app") if isinstance(b, dict) else None
    if not isinstance(app_ident, str):
        raise invalid("Missing required params: app.")
    a = c.app(app_ident)
    if ad.plan.split(":", 1)[1].startswith("essential"):
        raise invalid("You can't perform this operation on Essential-tier databases.")
    cred = b.get("credential") or "default"
    name = (b.get("name") or "DATABASE_CONNECTION_POOL").upper()
    if not re.match(r"^[A-Z][A-Z0-9_]*$", name):
        raise invalid("Attachment name must start with a letter and contain only letters, "
                      "digits and underscores.")
    ns = f"connection-pooling:{cred}"
    existing = next((x for x in a.attachments() if x.name == name), None)
    if existing and existing.addon is ad and existing.namespace == ns:
        return Response(200, existing.json())
    if existing or name + "_URL" in a.config:
        raise invalid(f"{name} is already attached to {a.name}.")
    att = attach(a, ad, name, c.account, namespace=ns)
    return Response(201, att.json())


@route("POST", "/client/v11/databases/(?P<addon>[^/]+)/backups", "data")
def data_capture(c, addon):
    ad = data_addon(c, addon)
    app = ad.app
    own = [x for x in ad.attachments() if x.app is app]
    from_name = ("DATABASE" if any(x.name == "DATABASE" for x in own)
                 else (own[0].name if own else ad.name))
    num = max([t.num for t in app.transfers] + [0]) + 1
    t = Transfer(app, ad, num, from_name)
    t.file = os.path.join(supervisor.SUPERVISOR.data_dir, f"{app.id}-{t.uuid}.dump")
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
