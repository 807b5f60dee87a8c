"""Platform API routes: the formation (scaling, resizing) and dynos (list, one-off, stop,
restart)."""

import re
import time
from urllib.parse import unquote

from .ops import new_oneoff, reconcile_formation, restart_dyno, stop_dyno
from .routes_apps import APP
from .routing import Response, route
from .util import DYNO_SIZES, MAX_QUANTITY, SIZE_BY_LOWER, HerokuError, invalid


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
        if f.type == "release" and q != 0:
            # the release command runs once per release, in a one-off dyno (best guess)
            raise invalid("Cannot scale the release process type: its quantity stays 0.")
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
    ttl = b.get("time_to_live")
    d = new_oneoff(a, b.get("type") or "run", b["command"], size, a.current_release(), env=env,
                   ttl=float(ttl) if isinstance(ttl, (int, float)) and ttl > 0 else None)
    return Response(201, d.json())


@route("POST", APP + "/dynos/(?P<dyno>[^/]+)/actions/stop")
def dyno_stop(c, app, dyno):
    a = c.app(app)
    d = find_dyno(a, dyno)     # gone (after its `complete` linger): 404 not_found
    # A one-off dyno ends (`complete`, then gone; a release dyno fails its release); a formation
    # dyno is replaced by the formation (restarted). A `complete` one-off: nothing to do.
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
