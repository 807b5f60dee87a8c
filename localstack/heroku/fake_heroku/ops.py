"""App operations shared by the Platform API, the data API, the admin API and the supervisor
(caller holds STATE.lock): releases (and their release phase), attaching and detaching add-ons,
add-ons of other services, the formation's dynos, one-off dynos, stopping and restarting dynos."""

import os
import random
import secrets
import signal
import time

from .model import STATE, Addon, Attachment, Dyno, Release
from .util import PG_COLORS, log


# --- releases -------------------------------------------------------------------------------

def create_release(app, description, user, immediate=False, release_phase=True):
    """A new release with the app's current config. immediate (admin setup): succeeded at once.
    Otherwise pending for at least release_seconds and, when the formation has a `release`
    process type (and release_phase), until its release command ends in a one-off dyno
    `release.NNNN` that runs with this release's config (the supervisor decides)."""
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
    f = app.formation.get("release")
    if not immediate and release_phase and f is not None and f.command:
        d = new_oneoff(app, "release", f.command, f.size, rel)
        d.phase_of = rel
        rel.phase_dyno = d
        rel.phase_deadline = time.time() + app.settings["release_phase_timeout_seconds"]
    log(f"{app.name}: release v{version} {description!r} ({rel.status})"
        + (f", release phase in {rel.phase_dyno.name}" if rel.phase_dyno else ""))
    return rel


# --- attachments and add-ons ----------------------------------------------------------------

def attach(app, addon, name, user, namespace=None, release=True, immediate=False):
    """Attaches as NAME: NAME_URL (Postgres add-ons only) and a release "Attach NAME (@ref:..)"."""
    att = Attachment(app, addon, name, namespace)
    STATE.attachments[att.id] = att
    if att.config_var:
        app.config[att.config_var] = att.url
        if release:
            create_release(app, f"Attach {name} (@ref:{addon.name})", user, immediate)
    return att


def detach(att, user, release=True):
    """Removes the attachment and its NAME_URL (then a release "Detach NAME (@ref:..)")."""
    app = att.app
    del STATE.attachments[att.id]
    if att.config_var and att.config_var in app.config:
        del app.config[att.config_var]
        if release:
            return create_release(app, f"Detach {att.name} (@ref:{att.addon.name})", user)
    return None


def next_color_name(app):
    used = {a.name for a in app.attachments()}
    for c in PG_COLORS:
        if f"HEROKU_POSTGRESQL_{c}" not in used:
            return f"HEROKU_POSTGRESQL_{c}"
    return f"HEROKU_POSTGRESQL_{secrets.token_hex(3).upper()}"


def add_postgres(app, plan, url, user, attachment_name=None, release=True, immediate=False,
                 color=False):
    """A heroku-postgresql add-on attached as DATABASE (the app's first) or else, or with color,
    as HEROKU_POSTGRESQL_<COLOR>, unless attachment_name is given."""
    if not plan.startswith("heroku-postgresql:"):
        plan = "heroku-postgresql:" + plan.split(":")[-1]
    addon = Addon(app, plan, url)
    STATE.addons[addon.id] = addon
    has_db = any(a.name == "DATABASE" for a in app.attachments()) or "DATABASE_URL" in app.config
    name = attachment_name or ("DATABASE" if not (has_db or color) else next_color_name(app))
    att = attach(app, addon, name, user, release=release, immediate=immediate)
    return addon, att


def add_service_addon(app, plan, user):
    """An add-on of another service (scheduler, an autoscaler): one attachment named after the
    service (SCHEDULER, HIREFIRE_RESOURCE), no config vars, no release."""
    if ":" not in plan:
        plan += ":standard"
    addon = Addon(app, plan)
    STATE.addons[addon.id] = addon
    attach(app, addon, addon.service.upper().replace("-", "_"), user)
    return addon


def remove_addon(addon, user):
    """Deletes an add-on: every attachment goes (with a Detach release where a var went), and
    the scheduler or autoscaler jobs it ran stop."""
    for att in addon.attachments():
        detach(att, user)
    STATE.addons.pop(addon.id, None)
    addon.state = "deprovisioned"
    app = addon.app
    if app.scheduler and app.scheduler["addon"] is addon:
        app.scheduler = None
    if app.autoscaler and app.autoscaler["addon"] is addon:
        app.autoscaler = None


# --- dynos ----------------------------------------------------------------------------------

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


def new_oneoff(app, type_, command, size, release, env=None, ttl=None):
    """A one-off dyno TYPE.NNNN (run, release, scheduler) running with that release's config."""
    while True:
        name = f"{type_}.{random.randint(1000, 9999)}"
        if name not in app.dynos:
            break
    d = Dyno(app, name, type_, size, command, oneoff=True, env=env, ttl=ttl)
    d.release = release
    app.dynos[name] = d
    return d


def finish_oneoff(d, now):
    """A one-off dyno whose process is gone: `complete` for complete_linger_seconds, then it
    disappears (the supervisor removes it). Decides the release phase it ran, if any."""
    if d.proc is not None and d.proc.poll() is not None:
        d.exit_status = d.proc.returncode
    d.phase, d.updated_at = "complete", now
    d.complete_until = now + d.app.settings["complete_linger_seconds"]
    how = "stopped" if d.stopped else f"exit status {d.exit_status}"
    log(f"{d.app.name}: {d.name} complete ({how})")
    rel = d.phase_of
    if rel is not None and rel.phase_result is None:
        rel.phase_result = "ok" if d.exit_status == 0 and not d.stopped else "failed"


def stop_dyno(d, after):
    """Schedules SIGTERM now and SIGKILL after the grace; after='remove' or 'restart'. A one-off
    dyno is never restarted: it is marked stopped and ends `complete`."""
    if d.phase == "complete":
        return
    if d.oneoff:
        d.stopped, after = True, "remove"
    if d.phase == "stopping":
        if after == "remove":
            d.after_stop = "remove"
        return
    if d.phase == "spawn" or d.proc is None or d.proc.poll() is not None:
        if after == "remove":
            kill_group(d, signal.SIGKILL)
            if d.oneoff:
                finish_oneoff(d, time.time())
            else:
                d.app.dynos.pop(d.name, None)
        else:
            d.phase, d.proc = "spawn", None
        return
    d.phase, d.after_stop = "stopping", after
    d.kill_at = time.time() + d.app.settings["dyno_stop_grace_seconds"]
    d.updated_at = time.time()
    kill_group(d, signal.SIGTERM)


def restart_dyno(d):
    stop_dyno(d, "remove" if d.oneoff else "restart")


def kill_group(d, sig):
    if d.proc is not None:
        try:
            os.killpg(d.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
