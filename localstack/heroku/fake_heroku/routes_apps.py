"""Platform API routes: the account, apps (list, create, info, update), collaborators, pipeline
couplings. APP is the path prefix of the app-scoped routes of the other routes_* modules."""

import random
import re
import time

from .model import STATE, App
from .ops import create_release
from .routing import Response, route
from .util import ADJECTIVES, NOUNS, HerokuError, invalid, log, not_found


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
