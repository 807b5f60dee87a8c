"""App operations shared by the Platform API and the admin API (caller holds STATE.lock): releases,
attaching and detaching add-ons, the formation's dynos, stopping and restarting dynos."""

import os
import secrets
import signal
import time

from .model import STATE, Addon, Attachment, Dyno, Release
from .util import PG_COLORS, log


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
