"""Platform API routes: releases and config vars (every config var change makes a release)."""

import re
from urllib.parse import unquote

from .ops import create_release
from .routes_apps import APP
from .routing import Response, route
from .util import HerokuError, invalid


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
