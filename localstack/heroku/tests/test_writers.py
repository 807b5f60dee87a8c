"""Writers and clients beyond the app's own dynos, as unkind as the real Heroku: the release
phase, the scheduler and autoscaler add-ons, pooler / credential / other-app attachments,
followers, a rate-limit bucket shared by every client of an account, tokens that expire,
one-off dynos that linger `complete`, Private Spaces."""

import time

from conftest import TOKEN, make_app, pid_alive


def dynos(fake, app="acme"):
    return {d["name"]: d for d in fake.get(f"/apps/{app}/dynos").body}


def of_type(fake, type_, app="acme"):
    return [d for d in dynos(fake, app).values() if d["type"] == type_]


def release(fake, version, app="acme"):
    return fake.get(f"/apps/{app}/releases/{version}").body


def newest(fake, app="acme"):
    return fake.get(f"/apps/{app}/releases", headers={"Range": "version ..; max=1, order=desc"}).body[0]


def env_file(path):
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


# --- release phase ------------------------------------------------------------------------------

def test_release_phase(fake, pg, tmp_path):
    out = tmp_path
    release_cmd = f"env > {out}/rel-$DYNO.env; sleep 0.6; exit ${{RELEASE_EXIT:-0}}"
    make_app(fake, database_url=pg.app_url, release_seconds=0.2, formation=[
        {"type": "web", "quantity": 1, "size": "Standard-1X", "command": "exec sleep 600"},
        {"type": "release", "quantity": 0, "size": "Standard-2X", "command": release_cmd}])
    # the formation lists `release` with quantity 0; setup releases are immediate, no release dyno
    forms = {f["type"]: f for f in fake.get("/apps/acme/formation").body}
    assert forms["release"]["quantity"] == 0 and forms["release"]["command"] == release_cmd
    assert {r["status"] for r in fake.get("/apps/acme/releases").body} == {"succeeded"}
    assert of_type(fake, "release") == []
    fake.wait_for(lambda: dynos(fake)["web.1"]["state"] == "up", what="web up")
    v0 = newest(fake)["version"]
    r = fake.patch("/apps/acme/formation/release", {"quantity": 1})
    assert (r.status, r.body["id"]) == (422, "invalid_params")

    # a config change: the release stays pending while release.NNNN runs with ITS config
    fake.patch("/apps/acme/config-vars", {"FOO": "baz"})
    rel = newest(fake)
    assert rel["version"] == v0 + 1 and rel["status"] == "pending" and rel["current"] is False
    assert rel["description"] == "Set FOO config vars"
    [rd] = of_type(fake, "release")
    assert rd["name"].startswith("release.") and rd["state"] in ("starting", "up")
    assert rd["release"]["version"] == rel["version"] and rd["size"] == "Standard-2X"
    assert dynos(fake)["web.1"]["release"]["version"] == v0      # app dynos wait
    time.sleep(0.3)
    assert release(fake, rel["version"])["status"] == "pending"
    fake.wait_for(lambda: release(fake, rel["version"])["status"] != "pending", what="released")
    assert release(fake, rel["version"])["status"] == "succeeded"
    assert release(fake, rel["version"])["current"] is True
    env = env_file(out / f"rel-{rd['name']}.env")
    assert env["FOO"] == "baz" and env["DATABASE_URL"] == pg.app_url and env["DYNO"] == rd["name"]
    # the finished release dyno lingers `complete`, then goes; web restarts on the new release
    assert dynos(fake).get(rd["name"], {}).get("state") in ("complete", None)
    fake.wait_for(lambda: of_type(fake, "release") == [], what="release dyno gone")
    fake.wait_for(lambda: dynos(fake)["web.1"]["release"]["version"] == rel["version"],
                  what="web on the new release")

    # non-zero exit -> failed; the current release and the dynos stay where they were
    fake.patch("/apps/acme/config-vars", {"RELEASE_EXIT": "3"})
    bad = newest(fake)
    fake.wait_for(lambda: release(fake, bad["version"])["status"] != "pending", what="phase end")
    assert release(fake, bad["version"])["status"] == "failed"
    assert release(fake, bad["version"])["current"] is False
    assert release(fake, rel["version"])["current"] is True
    time.sleep(0.3)
    assert dynos(fake)["web.1"]["release"]["version"] == rel["version"]

    # a release dyno that is stopped fails its release
    fake.admin("POST", "/apps/acme/settings", {"formation_commands": {"release": "exec sleep 600"}})
    fake.patch("/apps/acme/config-vars", {"RELEASE_EXIT": None})
    stopped = newest(fake)
    [rd] = fake.wait_for(lambda: [d for d in of_type(fake, "release")
                                  if d["release"]["version"] == stopped["version"]], what="rd")
    assert fake.post(f"/apps/acme/dynos/{rd['name']}/actions/stop").status == 202
    fake.wait_for(lambda: release(fake, stopped["version"])["status"] != "pending", what="stop")
    assert release(fake, stopped["version"])["status"] == "failed"

    # over release_phase_timeout_seconds -> failed, and the dyno is stopped
    fake.admin("POST", "/apps/acme/settings", {"release_phase_timeout_seconds": 0.8})
    fake.patch("/apps/acme/config-vars", {"SLOW": "1"})
    slow = newest(fake)
    fake.wait_for(lambda: release(fake, slow["version"])["status"] != "pending", what="timeout")
    assert release(fake, slow["version"])["status"] == "failed"
    fake.wait_for(lambda: of_type(fake, "release") == [], what="timed-out dyno gone")
    assert release(fake, rel["version"])["current"] is True

    # attach / detach releases run it too, with their own config (Detach: no DATABASE_URL)
    fake.admin("POST", "/apps/acme/settings", {"release_phase_timeout_seconds": 60,
                                               "formation_commands": {"release": release_cmd}})
    addon = fake.get("/apps/acme/addons").body[0]
    db = fake.get("/apps/acme/addon-attachments/DATABASE").body
    fake.post("/addon-attachments", {"addon": addon["id"], "app": "acme", "name": "KEEP"})
    att = newest(fake)
    assert att["description"] == f"Attach KEEP (@ref:{addon['name']})"
    fake.delete("/addon-attachments/" + db["id"])
    det = newest(fake)
    assert det["description"] == f"Detach DATABASE (@ref:{addon['name']})"
    [rd] = [d for d in of_type(fake, "release") if d["release"]["version"] == det["version"]]
    fake.wait_for(lambda: release(fake, det["version"])["status"] == "succeeded", what="detach")
    env = env_file(out / f"rel-{rd['name']}.env")
    assert "DATABASE_URL" not in env and env["KEEP_URL"] == pg.app_url
    assert release(fake, att["version"])["status"] == "succeeded"


def test_replacing_an_attachment_makes_detach_and_attach_releases(fake, pg):
    make_app(fake, database_url=pg.app_url, formation=[])
    fake.admin("POST", "/apps/acme/addons", {"database_url": pg.other_url,
                                             "attachment_name": "HEROKU_POSTGRESQL_ONYX"})
    other = fake.get("/apps/acme/addon-attachments/HEROKU_POSTGRESQL_ONYX").body["addon"]
    first = fake.get("/apps/acme/addon-attachments/DATABASE").body["addon"]
    fake.post("/addon-attachments", {"addon": first["id"], "app": "acme", "name": "OLD"})
    v = newest(fake)["version"]
    # what pg:promote sends
    r = fake.post("/addon-attachments", {"addon": {"name": other["name"]}, "app": {"name": "acme"},
                                         "name": "DATABASE", "namespace": None, "confirm": "acme"})
    assert r.status == 201
    rels = fake.get("/apps/acme/releases", headers={"Range": "version ..; max=2, order=desc"}).body
    assert [(x["version"], x["description"]) for x in rels] == [
        (v + 2, f"Attach DATABASE (@ref:{other['name']})"),
        (v + 1, f"Detach DATABASE (@ref:{first['name']})")]
    assert fake.get("/apps/acme/config-vars").body["DATABASE_URL"] == pg.other_url


# --- scheduler and autoscaler -------------------------------------------------------------------

def test_scheduler_runs_jobs_in_maintenance(fake, pg, tmp_path):
    make_app(fake, database_url=pg.app_url, formation=[], maintenance=True)
    cmd = f"echo \"$DYNO $FOO\" >> {tmp_path}/jobs; sleep 0.4"
    r = fake.admin("POST", "/apps/acme/scheduler",
                   {"command": cmd, "every_seconds": 0.5, "size": "Standard-1X"})
    assert r["addon"]["addon_service"]["name"] == "scheduler"
    addons = fake.get("/apps/acme/addons").body
    sched = [a for a in addons if a["addon_service"]["name"] == "scheduler"]
    assert len(sched) == 1 and sched[0]["plan"]["name"] == "scheduler:standard"
    assert sched[0]["config_vars"] == []
    assert fake.get("/apps/acme").body["maintenance"] is True
    seen = fake.wait_for(lambda: of_type(fake, "scheduler"), what="a scheduler dyno")
    assert seen[0]["name"].startswith("scheduler.") and seen[0]["state"] in ("starting", "up")
    fake.wait_for(lambda: (tmp_path / "jobs").exists()
                  and len((tmp_path / "jobs").read_text().splitlines()) >= 2, what="two runs")
    lines = (tmp_path / "jobs").read_text().splitlines()
    assert all(line.startswith("scheduler.") and line.endswith(" bar") for line in lines)
    # the current release's config
    fake.patch("/apps/acme/config-vars", {"FOO": "new"})
    fake.wait_for(lambda: (tmp_path / "jobs").read_text().rstrip().endswith(" new"),
                  what="job with the new config")
    fake.admin("DELETE", "/apps/acme/scheduler")
    assert all(a["addon_service"]["name"] != "scheduler"
               for a in fake.get("/apps/acme/addons").body)
    time.sleep(0.1)
    n = len((tmp_path / "jobs").read_text().splitlines())
    time.sleep(1.2)
    assert len((tmp_path / "jobs").read_text().splitlines()) <= n + 1     # a running one may end


def test_autoscaler_scales_back_with_the_accounts_tokens(fake, pg):
    make_app(fake, database_url=pg.app_url, formation=[
        {"type": "worker", "quantity": 1, "size": "Standard-1X", "command": "exec sleep 600"}])
    r = fake.admin("POST", "/apps/acme/autoscaler", {"type": "worker", "quantity": 1,
                                                     "every_seconds": 0.3,
                                                     "service": "hirefire-resource"})
    assert r["addon"]["addon_service"]["name"] == "hirefire-resource"
    assert "hirefire-resource" in {a["addon_service"]["name"] for a in fake.get("/apps/acme/addons").body}
    fake.admin("POST", "/rate-limit", {"remaining": 10, "refill_per_second": 0})
    fake.patch("/apps/acme/formation", {"updates": [{"type": "worker", "quantity": 0}]})
    fake.wait_for(lambda: fake.get("/apps/acme/formation/worker").body["quantity"] == 1,
                  what="scaled back up")      # (this GET costs tokens too)
    fake.wait_for(lambda: "worker.1" in dynos(fake), what="worker.1 back")
    log = [e for e in fake.admin("GET", "/requests") if e["server"] == "addon"]
    assert [(e["method"], e["path"], e["user_agent"], e["status"]) for e in log] == [
        ("PATCH", "/apps/acme/formation", "hirefire-resource", 200)]
    # the autoscaler's request came out of the same bucket: the last token goes to our scale-down
    fake.admin("POST", "/rate-limit", {"remaining": 1})
    assert fake.patch("/apps/acme/formation", {"updates": [{"type": "worker", "quantity": 0}]}).status == 200
    time.sleep(0.8)
    assert fake.state("acme")["formation"][0]["quantity"] == 0           # no token, no change
    assert [e["status"] for e in fake.admin("GET", "/requests") if e["server"] == "addon"][-1] == 429
    fake.admin("POST", "/rate-limit", {"remaining": 50})
    fake.wait_for(lambda: fake.state("acme")["formation"][0]["quantity"] == 1, what="scaled again")
    assert fake.get("/account/rate-limits").body["remaining"] == 49
    fake.admin("DELETE", "/apps/acme/autoscaler")
    fake.patch("/apps/acme/formation", {"updates": [{"type": "worker", "quantity": 0}]})
    time.sleep(0.8)
    assert fake.state("acme")["formation"][0]["quantity"] == 0
    fake.admin("POST", "/rate-limit", {"remaining": 4500, "refill_per_second": 1.25})


# --- attachments beyond DATABASE ---------------------------------------------------------------

def test_pooler_credentials_and_other_apps(fake, pg):
    make_app(fake, database_url=pg.app_url, formation=[], pooler=True,
             credentials={"analyst": pg.other_url})
    addon = fake.get("/apps/acme/addons").body[0]
    atts = {a["name"]: a for a in fake.get("/apps/acme/addon-attachments").body}
    assert atts["DATABASE_CONNECTION_POOL"]["namespace"] == "connection-pooling:default"
    assert atts["DATABASE"]["namespace"] is None
    cfg = fake.get("/apps/acme/config-vars").body
    assert cfg["DATABASE_CONNECTION_POOL_URL"] == pg.app_url     # the fake's pooler: the db itself

    # credential attachments: the registered credential's URL, else the add-on's
    v = newest(fake)["version"]
    r = fake.post("/addon-attachments", {"addon": {"name": addon["name"]}, "app": {"name": "acme"},
                                         "name": "ANALYST", "namespace": "credential:analyst"})
    assert r.status == 201 and r.body["namespace"] == "credential:analyst"
    assert newest(fake)["version"] == v + 1
    assert newest(fake)["description"] == f"Attach ANALYST (@ref:{addon['name']})"
    r = fake.post("/addon-attachments", {"addon": addon["name"], "app": "acme",
                                         "namespace": "credential:reporting"})
    assert r.status == 201 and r.body["name"].startswith("HEROKU_POSTGRESQL_")
    cfg = fake.get("/apps/acme/config-vars").body
    assert cfg["ANALYST_URL"] == pg.other_url and cfg[r.body["name"] + "_URL"] == pg.app_url
    r = fake.post("/addon-attachments", {"addon": addon["name"], "app": "acme", "name": "X",
                                         "namespace": "bogus"})
    assert (r.status, r.body["id"]) == (422, "invalid_params")

    # a second app attached to the same add-on (admin convenience), and a third by the API
    fake.admin("POST", "/apps", {"name": "acme-admin", "formation": [],
                                 "attach_addon": {"addon": addon["name"], "as": "DATABASE"}})
    assert fake.get("/apps/acme-admin/config-vars").body["DATABASE_URL"] == pg.app_url
    fake.admin("POST", "/apps", {"name": "acme-reports", "formation": []})
    v = newest(fake, "acme-reports")["version"]
    r = fake.post("/addon-attachments", {"addon": addon["id"], "app": "acme-reports",
                                         "name": "DATABASE"})
    assert r.status == 201 and r.body["app"]["name"] == "acme-reports"
    rel = newest(fake, "acme-reports")
    assert rel["version"] == v + 1 and rel["description"] == f"Attach DATABASE (@ref:{addon['name']})"
    # the pooler through the data API (what pg:connection-pooling:attach sends)
    r = fake.post(f"/client/v11/databases/{addon['name']}/connection-pooling",
                  {"app": "acme-admin", "credential": "default"})
    assert r.status == 201 and r.body["name"] == "DATABASE_CONNECTION_POOL"
    assert r.body["namespace"] == "connection-pooling:default"
    assert newest(fake, "acme-admin")["description"] == \
        f"Attach DATABASE_CONNECTION_POOL (@ref:{addon['name']})"
    # ... and through the Platform API with the namespace (what pg:promote sends)
    r = fake.post("/addon-attachments", {"addon": {"name": addon["name"]}, "app": {"name": "acme-reports"},
                                         "name": "DATABASE_CONNECTION_POOL",
                                         "namespace": "connection-pooling:default"})
    assert r.status == 201
    assert fake.get("/apps/acme-reports/config-vars").body["DATABASE_CONNECTION_POOL_URL"] == pg.app_url
    # every attachment of the add-on, on every app
    every = fake.get(f"/addons/{addon['id']}/addon-attachments").body
    assert sorted((a["app"]["name"], a["name"], a["namespace"]) for a in every) == sorted([
        ("acme", "DATABASE", None), ("acme", "DATABASE_CONNECTION_POOL", "connection-pooling:default"),
        ("acme", "ANALYST", "credential:analyst"),
        ("acme", cfg_name(fake), "credential:reporting"),
        ("acme-admin", "DATABASE", None),
        ("acme-admin", "DATABASE_CONNECTION_POOL", "connection-pooling:default"),
        ("acme-reports", "DATABASE", None),
        ("acme-reports", "DATABASE_CONNECTION_POOL", "connection-pooling:default")])
    assert sorted(a["name"] for a in fake.get("/apps/acme-admin/addon-attachments").body) == \
        ["DATABASE", "DATABASE_CONNECTION_POOL"]
    # essential plans have no connection pooling
    fake.admin("POST", "/apps", {"name": "tiny", "formation": [], "database_url": pg.other_url,
                                 "addon_plan": "heroku-postgresql:essential-0"})
    tiny = fake.get("/apps/tiny/addons").body[0]
    r = fake.post(f"/client/v11/databases/{tiny['id']}/connection-pooling", {"app": "tiny"})
    assert r.status == 422


def cfg_name(fake):
    return next(a["name"] for a in fake.get("/apps/acme/addon-attachments").body
                if a["namespace"] == "credential:reporting")


def test_followers_in_the_data_api(fake, pg):
    make_app(fake, database_url=pg.app_url, formation=[])
    leader = fake.get("/apps/acme/addons").body[0]
    r = fake.admin("POST", "/apps/acme/addons", {"database_url": pg.other_url,
                                                 "follows": leader["name"]})
    follower = r["addon"]
    assert r["attachment"]["name"].startswith("HEROKU_POSTGRESQL_")
    fdb = fake.get(f"/client/v11/databases/{follower['id']}").body
    host_db = f"postgres://127.0.0.1:{pg.port}/appdb"
    assert fdb["following"] == host_db
    assert fdb["leader"] == {"addon_id": leader["id"], "name": leader["name"]}
    info = {i["name"]: i for i in fdb["info"]}
    assert info["Following"] == {"name": "Following", "resolve_db_name": True, "values": [host_db]}
    assert "Followers" not in info
    ldb = fake.get(f"/client/v11/databases/{leader['name']}").body
    assert ldb["following"] is None and ldb["leader"] is None
    linfo = {i["name"]: i for i in ldb["info"]}
    assert linfo["Followers"] == {"name": "Followers", "resolve_db_name": True,
                                  "values": [f"postgres://127.0.0.1:{pg.port}/otherdb"]}
    assert "Following" not in linfo
    # a follower without its own URL uses the leader's database (the fake does not replicate)
    r = fake.admin("POST", "/apps/acme/addons", {"follows": leader["id"]})
    assert fake.get(f"/client/v11/databases/{r['addon']['id']}").body["following"] == host_db
    assert len(linfo["Followers"]["values"]) == 1
    assert len({i["name"]: i for i in fake.get(
        f"/client/v11/databases/{leader['id']}").body["info"]}["Followers"]["values"]) == 2


# --- the account's rate-limit bucket and tokens -------------------------------------------------

def test_rate_limit_bucket_is_shared_by_the_accounts_tokens(fake):
    fake.admin("POST", "/apps", {"name": "acme", "formation": []})
    fake.admin("POST", "/tokens", {"token": "ci-token"})                     # owner@example.com
    fake.admin("POST", "/tokens", {"token": "other-token", "email": "other@example.com"})
    fake.admin("POST", "/rate-limit", {"remaining": 10, "refill_per_second": 0})
    try:
        assert fake.get("/apps/acme").headers["ratelimit-remaining"] == "9"
        assert fake.get("/apps/acme", token="ci-token").headers["ratelimit-remaining"] == "8"
        assert fake.get("/apps", token="other-token").headers["ratelimit-remaining"] == "9"
        assert fake.get("/account/rate-limits").body == {"remaining": 8}
    finally:
        fake.admin("POST", "/rate-limit", {"remaining": 4500, "refill_per_second": 1.25})


def test_tokens_expire(fake, pg):
    make_app(fake, database_url=pg.app_url, formation=[])
    r = fake.admin("POST", "/tokens", {"token": "sso-token", "expires_in": 2.0})
    assert r["expires_in"] in (1, 2)
    fake.admin("POST", "/tokens", {"token": "old-key", "expires_in": 2.0, "expired_status": 403})
    addon = fake.get("/apps/acme/addons").body[0]
    assert fake.get("/apps/acme", token="sso-token").status == 200
    assert fake.get(f"/client/v11/databases/{addon['id']}/wait_status", token="old-key").status == 200
    auths = {a["access_token"]["token"]: a for a in fake.get("/oauth/authorizations", token="sso-token").body}
    assert auths["sso-token"]["access_token"]["expires_in"] in (0, 1, 2)
    assert auths[TOKEN]["access_token"]["expires_in"] is None
    assert auths["sso-token"]["user"]["email"] == "owner@example.com"
    time.sleep(2.1)
    r = fake.get("/apps/acme", token="sso-token")
    assert (r.status, r.body["id"], r.body["message"]) == (401, "unauthorized",
                                                           "Invalid credentials provided.")
    r = fake.get("/apps/acme", token="old-key")
    assert (r.status, r.body["id"]) == (403, "forbidden")
    r = fake.get(f"/client/v11/databases/{addon['id']}/wait_status", token="old-key")
    assert r.status == 403
    assert fake.get("/apps/acme").status == 200                # the default token never expires
    assert "expired" in {e["authorization"] for e in fake.admin("GET", "/requests")}


# --- one-off dynos ------------------------------------------------------------------------------

def test_oneoff_dynos_linger_complete_and_stop(fake, pg):
    make_app(fake, database_url=pg.app_url, formation=[], complete_linger_seconds=1.0,
             dyno_stop_grace_seconds=2.0)
    r = fake.post("/apps/acme/dynos", {"command": "exit 0"})
    name = r.body["name"]
    fake.wait_for(lambda: dynos(fake).get(name, {}).get("state") == "complete", what="complete")
    assert fake.post(f"/apps/acme/dynos/{name}/actions/stop").status == 202       # nothing to do
    fake.wait_for(lambda: name not in dynos(fake), what="gone after the linger")
    r = fake.post(f"/apps/acme/dynos/{name}/actions/stop")
    assert (r.status, r.body["id"]) == (404, "not_found")
    # stop of a one-off that ignores SIGTERM: `down` for the grace, SIGKILL, `complete`, gone
    r = fake.post("/apps/acme/dynos", {"command": "trap '' TERM; sleep 600 & wait",
                                       "type": "run"})
    name = r.body["name"]
    pid = fake.wait_for(lambda: next((d["pid"] for d in fake.state("acme")["dynos"]
                                      if d["name"] == name), None), what="pid")
    assert fake.post(f"/apps/acme/dynos/{name}/actions/stop").status == 202
    assert dynos(fake)[name]["state"] == "down"
    time.sleep(0.5)
    assert pid_alive(pid) and dynos(fake)[name]["state"] == "down"
    fake.wait_for(lambda: dynos(fake).get(name, {}).get("state") == "complete", what="killed")
    assert not pid_alive(pid)
    fake.wait_for(lambda: name not in dynos(fake), what="gone")


# --- Private Spaces -----------------------------------------------------------------------------

def test_private_space(fake):
    fake.admin("POST", "/apps", {"name": "spaced", "formation": [], "space": "acme-space"})
    app = fake.get("/apps/spaced").body               # validated against the schema
    assert app["space"]["name"] == "acme-space" and app["space"]["shield"] is False
    assert len(app["space"]["id"]) == 36
    fake.admin("POST", "/apps", {"name": "plain", "formation": []})
    assert fake.get("/apps/plain").body["space"] is None
