"""Platform API routes: add-ons (created: heroku-postgresql only), their config, and add-on
attachments (plain, credential:NAME and connection-pooling:default namespaces, other apps)."""

import re
from urllib.parse import unquote

from .model import STATE
from .ops import add_postgres, attach, detach, next_color_name, remove_addon
from .routes_apps import APP
from .routing import Response, route
from .util import HerokuError, invalid


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
    remove_addon(ad, c.account)
    return Response(200, ad.json())


# --- add-on config (what `heroku addons:attach --credential NAME` checks first) --------------

def addon_config_items(ad, namespace=None):
    url = ad.url_for(namespace)
    return [{"name": "URL", "value": url}] if url else []


@route("GET", "/addons/(?P<addon>[^/]+)/config")
def addon_config(c, addon):
    ad = STATE.find_addon(addon)
    if ad is None or ad not in visible_addons(c):
        raise HerokuError(404, "not_found", "Couldn't find that add on.", resource="add_on")
    return Response(200, addon_config_items(ad))


@route("GET", "/addons/(?P<addon>[^/]+)/config/(?P<ns>[^/]+)")
def addon_config_namespace(c, addon, ns):
    """Not in the schema; the CLI asks /config/credential:NAME and needs a non-empty list. The
    fake knows every credential name (registered ones have their own URL)."""
    ad = STATE.find_addon(addon)
    if ad is None or ad not in visible_addons(c):
        raise HerokuError(404, "not_found", "Couldn't find that add on.", resource="add_on")
    return Response(200, addon_config_items(ad, unquote(ns)))


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
    ns = b.get("namespace")
    if ns is not None and not (isinstance(ns, str) and ad.is_postgres and re.match(
            r"^(credential|connection-pooling):[a-z0-9_-]+$", ns)):
        raise invalid(f"Invalid namespace: {ns!r} (credential:NAME or connection-pooling:default "
                      f"on a heroku-postgresql add-on).")
    name = b.get("name")
    if name is None:
        if ns and ns.startswith("connection-pooling:"):
            name = "DATABASE_CONNECTION_POOL"
        elif ad.is_postgres:
            name = next_color_name(a)
        else:
            name = ad.service.upper().replace("-", "_")
    if not isinstance(name, str) or not re.match(r"^[A-Za-z][A-Za-z0-9_]*$", name):
        raise invalid("Attachment name must start with a letter and contain only letters, "
                      "digits and underscores.")
    name = name.upper()
    # names are unique per app whatever the namespace (NAME_URL is one config var)
    existing = next((x for x in a.attachments() if x.name == name), None)
    if existing and existing.addon is ad and existing.namespace == ns:
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
        detach(existing, c.account)             # "Detach NAME" release, then "Attach NAME"
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
