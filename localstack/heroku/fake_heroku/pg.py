"""Postgres helpers (the fake acts as Heroku's infrastructure, so it reaches the database itself):
the network map applied to URLs, libpq environments, the facts pg:info shows."""

import os
import subprocess
from urllib.parse import unquote, urlsplit, urlunsplit

from .util import DEFAULT_PORTS


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


def url_without_credentials(url):
    """scheme://host:port/dbname, as the data API shows leaders and followers."""
    u = urlsplit(url)
    port = u.port or DEFAULT_PORTS.get(u.scheme, 5432)
    return f"{u.scheme}://{u.hostname}:{port}{u.path}"


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
