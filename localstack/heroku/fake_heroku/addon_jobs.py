"""What the scheduler and autoscaler add-ons do over time (the supervisor calls the ticks with
STATE.lock held); the admin API sets them up.

Scheduler (Heroku Scheduler): every `every` seconds a one-off dyno `scheduler.NNNN` (type
`scheduler`) runs the command with the current release's config, whether the app is in
maintenance mode or not.

Autoscaler (HireFire, Rails Autoscale, Judoscale ...): every `every` seconds, when the process
type's quantity is below `quantity`, it scales it back up as a Platform API client of the app
owner's account: that costs one token of the account's rate-limit bucket (no token: no change
this round, like a 429) and shows in the request log (server `addon`, user agent = service)."""

import time

from .model import STATE
from .ops import add_service_addon, new_oneoff, reconcile_formation, remove_addon
from .util import log, new_id


def start_scheduler(app, command, every, size, plan="scheduler:standard"):
    if app.scheduler:
        remove_addon(app.scheduler["addon"], app.owner)
    addon = add_service_addon(app, plan, app.owner)
    app.scheduler = {"addon": addon, "command": command, "every": every, "size": size,
                     "next_at": time.time() + every, "runs": 0}
    return addon


def start_autoscaler(app, type_, quantity, every, service="hirefire-resource"):
    if app.autoscaler:
        remove_addon(app.autoscaler["addon"], app.owner)
    addon = add_service_addon(app, service, app.owner)
    app.autoscaler = {"addon": addon, "type": type_, "quantity": quantity, "every": every,
                      "next_at": time.time() + every, "scaled": 0}
    return addon


def tick_scheduler(app, now):
    job = app.scheduler
    if not job or now < job["next_at"]:
        return
    job["next_at"] = now + job["every"]
    job["runs"] += 1
    d = new_oneoff(app, "scheduler", job["command"], job["size"], app.current_release())
    log(f"{app.name}: scheduler started {d.name}")


def tick_autoscaler(app, now):
    job = app.autoscaler
    if not job or now < job["next_at"]:
        return
    job["next_at"] = now + job["every"]
    f = app.formation.get(job["type"])
    if f is None or f.quantity >= job["quantity"]:
        return
    ok, _ = STATE.take_rate_token(app.owner)
    STATE.requests.append({
        "time": now, "method": "PATCH", "path": f"/apps/{app.name}/formation", "query": "",
        "accept": "application/vnd.heroku+json; version=3", "authorization": "valid",
        "range": None, "user_agent": job["addon"].service, "content_type": "application/json",
        "request_id": new_id(), "server": "addon", "status": 200 if ok else 429})
    if not ok:
        log(f"{app.name}: autoscaler {job['addon'].service} rate limited")
        return
    f.quantity, f.updated_at = job["quantity"], now
    job["scaled"] += 1
    reconcile_formation(app, f.type)
    log(f"{app.name}: autoscaler {job['addon'].service} scaled {f.type} to {f.quantity}")
