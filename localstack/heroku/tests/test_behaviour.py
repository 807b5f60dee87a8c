"""Behaviour of the fake: auth and errors, paging, rate limits, attachment and config rules,
releases, real dyno processes, the network map, backups, faults, shutdown."""

import base64
import json
import os
import signal
import subprocess
import time

from conftest import TOKEN, http, make_app, pid_alive, start_fake, stop_fake, Client


# --- auth, headers, errors ---------------------------------------------------------------------

def test_accept_auth_and_access_errors(fake, pg):
    make_app(fake, database_url=pg.app_url)
    r = fake.get("/apps/acme", accept=None)
    assert (r.status, r.body["id"]) == (406, "not_acceptable")
    r = fake.get("/apps/acme", token=None)
    assert (r.status, r.body["id"]) == (401, "unauthorized")
    r = fake.get("/apps/acme", token="wrong")
    assert (r.status, r.body["id"]) == (401, "unauthorized")
    basic = base64.b64encode(f":{TOKEN}".encode()).decode()
    r = fake.get("/apps/acme", token=None, headers={"Authorization": "Basic " + basic})
    assert r.status == 200
    assert fake.get("/apps/acme", accept="application/vnd.heroku+json; version=3.sdk").status == 200

    fake.admin("POST", "/tokens", {"token": "expired-tok", "expired": True})
    assert fake.get("/apps/acme", token="expired-tok").body["id"] == "unauthorized"
    fake.admin("POST", "/tokens", {"token": "tfa-tok", "two_factor_required": True})
    r = fake.get("/apps/acme", token="tfa-tok")
    assert (r.status, r.body["id"], r.body["app"]["name"]) == (403, "two_factor", "acme")
    fake.admin("POST", "/tokens", {"token": "other-tok", "email": "other@example.com",
                                   "apps": ["someone-else"]})
    r = fake.get("/apps/acme", token="other-tok")
    assert (r.status, r.body["id"]) == (403, "forbidden")
    assert "acme" in r.body["message"]
    assert fake.get("/apps", token="other-tok").body == []
    r = fake.get("/apps/nope")
    assert (r.status, r.body["id"]) == (404, "not_found")
    r = fake.get("/no/such/endpoint")
    assert (r.status, r.body["id"]) == (404, "not_found")
    r = fake.patch("/apps/acme", {"maintenance": "yes"})
    assert (r.status, r.body["id"]) == (422, "invalid_params")
    # request ids differ per response
    ids = {fake.get("/apps/acme").headers["request-id"] for _ in range(3)}
    assert len(ids) == 3
    # the request log records presence/validity of Authorization, never the token
    log = fake.admin("GET", "/requests")
    assert {e["authorization"] for e in log} >= {"absent", "valid", "invalid"}
    assert TOKEN not in json.dumps(log)


def test_paging_over_many_items(fake):
    for i in range(250):
        fake.admin("POST", "/apps", {"name": f"app-{i:03d}", "formation": []})
    r = fake.get("/apps")
    assert r.status == 206 and len(r.body) == 200
    assert r.headers["next-range"].startswith("id ]")
    assert r.headers["content-range"].startswith("id ")
    assert "name" in r.headers["accept-ranges"]
    names = [a["name"] for a in r.body]
    r2 = fake.get("/apps", headers={"Range": r.headers["next-range"]})
    assert r2.status == 200 and len(r2.body) == 50 and "next-range" not in r2.headers
    names += [a["name"] for a in r2.body]
    assert sorted(names) == [f"app-{i:03d}" for i in range(250)]
    # by name, descending, small pages
    pages, rng = [], "name ..; max=100, order=desc"
    while rng:
        r = fake.get("/apps", headers={"Range": rng})
        pages.append([a["name"] for a in r.body])
        rng = r.headers.get("next-range")
    assert [len(p) for p in pages] == [100, 100, 50]
    flat = sum(pages, [])
    assert flat == sorted(flat, reverse=True) and len(set(flat)) == 250
    r = fake.get("/apps", headers={"Range": "colour ..; max=10"})
    assert (r.status, r.body["id"]) == (416, "requested_range_not_satisfiable")
    # newest release, as the CLI asks for it
    fake.admin("POST", "/apps", {"name": "rel-app", "config_vars": {"A": "1"}, "formation": []})
    r = fake.get("/apps/rel-app/releases", headers={"Range": "version ..; max=1, order=desc"})
    assert len(r.body) == 1 and r.body[0]["version"] == 2


def test_rate_limit_and_refill(fake):
    fake.admin("POST", "/apps", {"name": "acme", "formation": []})
    fake.admin("POST", "/rate-limit", {"remaining": 3, "refill_per_second": 0})
    seen = [int(fake.get("/apps/acme").headers["ratelimit-remaining"]) for _ in range(3)]
    assert seen == [2, 1, 0]
    r = fake.get("/apps/acme")
    assert (r.status, r.body["id"]) == (429, "rate_limit")
    assert r.headers["ratelimit-remaining"] == "0"
    # the rate-limit endpoint itself costs nothing
    assert fake.get("/account/rate-limits").body == {"remaining": 0}
    fake.admin("POST", "/rate-limit", {"refill_per_second": 20})
    time.sleep(0.3)
    assert fake.get("/apps/acme").status == 200
    fake.admin("POST", "/rate-limit", {"remaining": 4500, "refill_per_second": 1.25})


# --- config vars, attachments, releases ------------------------------------------------------

def latest_release(fake, app="acme"):
    return fake.get(f"/apps/{app}/releases", headers={"Range": "version ..; max=1, order=desc"}).body[0]


def test_attachment_and_config_rules(fake, pg):
    make_app(fake, database_url=pg.app_url, formation=[])
    cfg = fake.get("/apps/acme/config-vars").body
    assert cfg["DATABASE_URL"] == pg.app_url and cfg["FOO"] == "bar"
    for change in ({"DATABASE_URL": "postgres://x@y/z"}, {"DATABASE_URL": None}):
        r = fake.patch("/apps/acme/config-vars", change)
        assert (r.status, r.body["id"]) == (422, "invalid_params")
        assert "Cannot overwrite attachment values DATABASE_URL" in r.body["message"]
    r = fake.patch("/apps/acme/config-vars", {"bad-key": "1"})
    assert r.status == 422
    db = fake.get("/apps/acme/addon-attachments/DATABASE").body
    addon = fake.get("/apps/acme/addons").body[0]
    assert addon["plan"]["name"] == "heroku-postgresql:standard-0"
    assert addon["config_vars"] == ["DATABASE_URL"]
    r = fake.delete("/addon-attachments/" + db["id"])
    assert (r.status, r.body["id"]) == (422, "invalid_params")
    assert "Cannot destroy last attachment to billing app" in r.body["message"]
    # by name is not an identity for DELETE
    assert fake.delete("/addon-attachments/DATABASE").status == 404
    # same name without confirm -> confirmation_required
    r = fake.post("/addon-attachments", {"addon": addon["id"], "app": "acme", "name": "DATABASE"})
    assert r.status == 200  # same add-on, same name: nothing to do
    # keep the database under another name, then detach DATABASE (the cutover's steps)
    v0 = latest_release(fake)["version"]
    keep = fake.post("/addon-attachments", {"addon": {"name": addon["name"]}, "app": {"name": "acme"},
                                            "name": "HEROKU_POSTGRESQL_LEGACY", "confirm": "acme"})
    assert keep.status == 201
    assert latest_release(fake)["description"].startswith("Attach HEROKU_POSTGRESQL_LEGACY")
    assert fake.delete("/addon-attachments/" + db["id"]).status == 200
    rel = latest_release(fake)
    assert rel["version"] == v0 + 2 and rel["description"].startswith("Detach DATABASE")
    cfg = fake.get("/apps/acme/config-vars").body
    assert "DATABASE_URL" not in cfg and cfg["HEROKU_POSTGRESQL_LEGACY_URL"] == pg.app_url
    # now DATABASE_URL is a plain var
    assert fake.patch("/apps/acme/config-vars", {"DATABASE_URL": "postgres://u@rds:5432/d"}).status == 200
    assert latest_release(fake)["description"] == "Set DATABASE_URL config vars"
    # re-attaching as DATABASE while a plain DATABASE_URL exists is refused (unset it first)
    r = fake.post("/addon-attachments", {"addon": addon["id"], "app": "acme", "name": "DATABASE",
                                         "confirm": "acme"})
    assert (r.status, r.body["id"]) == (422, "invalid_params")
    assert fake.patch("/apps/acme/config-vars", {"DATABASE_URL": None}).status == 200
    r = fake.post("/addon-attachments", {"addon": addon["id"], "app": "acme", "name": "DATABASE"})
    assert r.status == 201
    assert fake.get("/apps/acme/config-vars").body["DATABASE_URL"] == pg.app_url
    # an existing name with another add-on needs confirm
    fake.admin("POST", "/apps/acme/addons", {"database_url": pg.other_url,
                                             "attachment_name": "HEROKU_POSTGRESQL_ONYX"})
    other = [a for a in fake.get("/apps/acme/addons").body if a["id"] != addon["id"]][0]
    r = fake.post("/addon-attachments", {"addon": other["id"], "app": "acme", "name": "HEROKU_POSTGRESQL_LEGACY"})
    assert (r.status, r.body["id"]) == (422, "confirmation_required")
    # resolver: DATABASE_URL -> the DATABASE attachment, with inclusions
    r = fake.post("/actions/addon-attachments/resolve", {"addon_attachment": "DATABASE_URL", "app": "acme"},
                  headers={"Accept-Inclusion": "addon:plan,config_vars"},
                  accept="application/vnd.heroku+json; version=3.sdk")
    assert [(a["name"], a["config_vars"], a["addon"]["plan"]["name"]) for a in r.body] == \
        [("DATABASE", ["DATABASE_URL"], "heroku-postgresql:standard-0")]
    assert len(fake.get("/apps/acme/addons").body) == 2


def test_releases_pending_succeeded_failed(fake, pg):
    make_app(fake, database_url=pg.app_url, formation=[], release_seconds=0.8)
    first = latest_release(fake)
    assert first["status"] == "succeeded" and first["current"] is True
    fake.patch("/apps/acme/config-vars", {"A": "1"})
    rel = latest_release(fake)
    assert rel["status"] == "pending" and rel["current"] is False
    assert rel["version"] == first["version"] + 1
    assert "heroku-postgresql:standard-0" in rel["addon_plan_names"]
    fake.wait_for(lambda: fake.get(f"/apps/acme/releases/{rel['id']}").body["status"] == "succeeded",
                  what="release succeeded")
    assert fake.get(f"/apps/acme/releases/{rel['version']}").body["current"] is True
    assert fake.get(f"/apps/acme/releases/{rel['version']}/config-vars").body["A"] == "1"
    # injected failure for the next release
    fake.admin("POST", "/faults", {"release_status": "failed", "app": "acme"})
    fake.patch("/apps/acme/config-vars", {"A": "2"})
    bad = latest_release(fake)
    assert bad["status"] == "pending"
    fake.wait_for(lambda: fake.get(f"/apps/acme/releases/{bad['id']}").body["status"] != "pending",
                  what="release done")
    assert fake.get(f"/apps/acme/releases/{bad['id']}").body["status"] == "failed"
    assert fake.get(f"/apps/acme/releases/{rel['id']}").body["current"] is True
    # only once
    fake.patch("/apps/acme/config-vars", {"A": "3"})
    fake.wait_for(lambda: latest_release(fake)["status"] == "succeeded", what="next release ok")


# --- dynos as real processes -------------------------------------------------------------------

def dynos(fake, app="acme"):
    return {d["name"]: d for d in fake.get(f"/apps/{app}/dynos").body}


def test_dynos_are_real_processes(fake, pg, tmp_path):
    out = tmp_path / "dynos"
    out.mkdir()
    # web writes its environment; worker ignores SIGTERM (needs the SIGKILL after the grace)
    web = (f"env > {out}/$DYNO.env; echo started >> {out}/$DYNO.starts; exec sleep 600")
    worker = "trap '' TERM; sleep 600 & wait"
    make_app(fake, database_url=pg.app_url, dyno_start_seconds=0.6, dyno_stop_grace_seconds=1.0,
             formation=[{"type": "web", "quantity": 2, "size": "Standard-1X", "command": web},
                        {"type": "worker", "quantity": 1, "size": "Standard-2X", "command": worker}])
    d = dynos(fake)
    assert set(d) == {"web.1", "web.2", "worker.1"}
    assert {x["state"] for x in d.values()} == {"starting"}
    assert d["worker.1"]["size"] == "Standard-2X"
    fake.wait_for(lambda: {x["state"] for x in dynos(fake).values()} == {"up"}, what="dynos up")
    state = fake.state("acme")
    pids = {x["name"]: x["pid"] for x in state["dynos"]}
    assert all(pid_alive(p) for p in pids.values())
    env = dict(line.split("=", 1) for line in (out / "web.1.env").read_text().splitlines() if "=" in line)
    assert env["DYNO"] == "web.1" and env["FOO"] == "bar" and env["DATABASE_URL"] == pg.app_url
    assert int(env["PORT"]) > 0
    v_before = d["web.1"]["release"]["version"]

    # a config change -> release -> every formation dyno restarts on it with the new environment
    fake.patch("/apps/acme/config-vars", {"FOO": "baz"})
    rel = latest_release(fake)["version"]
    fake.wait_for(lambda: all(x["state"] == "up" and x["release"]["version"] == rel
                              for x in dynos(fake).values()), timeout=20, what="restart on release")
    assert rel > v_before
    env = dict(line.split("=", 1) for line in (out / "web.1.env").read_text().splitlines() if "=" in line)
    assert env["FOO"] == "baz"
    assert (out / "web.1.starts").read_text().count("started") == 2
    assert not pid_alive(pids["web.1"]) and not pid_alive(pids["worker.1"])

    # scale down: SIGTERM, "down" while it lingers, SIGKILL after the grace, then gone
    pids = {x["name"]: x["pid"] for x in fake.state("acme")["dynos"]}
    r = fake.patch("/apps/acme/formation", {"updates": [{"type": "web", "quantity": 0},
                                                        {"type": "worker", "quantity": "0"}]})
    assert {(f["type"], f["quantity"]) for f in r.body} == {("web", 0), ("worker", 0)}
    d = dynos(fake)
    assert d["worker.1"]["state"] == "down"
    time.sleep(0.5)
    assert "worker.1" in dynos(fake) and pid_alive(pids["worker.1"])   # ignores SIGTERM
    fake.wait_for(lambda: dynos(fake) == {}, timeout=10, what="all dynos gone")
    assert not any(pid_alive(p) for p in pids.values())

    # one-off dyno: runs its command with extra env, then disappears
    r = fake.post("/apps/acme/dynos", {"command": f"echo $X $FOO > {out}/oneoff; sleep 1",
                                       "env": {"X": "one-off"}})
    assert r.body["name"].startswith("run.") and r.body["type"] == "run"
    fake.wait_for(lambda: (out / "oneoff").exists(), what="one-off output")
    assert (out / "oneoff").read_text().strip() == "one-off baz"
    fake.wait_for(lambda: dynos(fake) == {}, timeout=10, what="one-off gone")
    # stopping a long one-off
    r = fake.post("/apps/acme/dynos", {"command": "exec sleep 600"})
    fake.wait_for(lambda: fake.state("acme")["dynos"][0]["pid"], what="pid")
    pid = fake.state("acme")["dynos"][0]["pid"]
    assert fake.post(f"/apps/acme/dynos/{r.body['name']}/actions/stop").status == 202
    fake.wait_for(lambda: dynos(fake) == {} and not pid_alive(pid), what="one-off stopped")
    # crashed dyno
    fake.admin("POST", "/apps/acme/settings", {"formation_commands": {"worker": "exit 3"},
                                               "crash_restart_seconds": 30})
    fake.patch("/apps/acme/formation/worker", {"quantity": 1})
    fake.wait_for(lambda: dynos(fake).get("worker.1", {}).get("state") == "crashed", what="crashed")
    r = fake.patch("/apps/acme/formation/nope", {"quantity": 1})
    assert (r.status, r.body["id"]) == (404, "not_found")
    r = fake.patch("/apps/acme/formation", {"updates": [{"type": "web", "quantity": -1}]})
    assert r.status == 422
    r = fake.patch("/apps/acme/formation", {"updates": [{"type": "web", "size": "Huge-9X"}]})
    assert r.status == 422


def test_network_map_reaches_local_database(fake, pg, tmp_path):
    """A dyno told DATABASE_URL=...rds.amazonaws.com:5432 reaches the local cluster."""
    rds = "postgres://app:s3cret%20pw%2Fx@mydb.abcdefghij.us-east-2.rds.amazonaws.com:5432/appdb"
    fake.admin("POST", "/network", {"mydb.abcdefghij.us-east-2.rds.amazonaws.com:5432":
                                    f"127.0.0.1:{pg.port}"})
    cmd = (f"psql \"$DATABASE_URL\" -X -q -c \"insert into notes(body) values ('$DYNO')\" "
           f"&& echo ok > {tmp_path}/done; exec sleep 600")
    make_app(fake, database_url=rds,
             formation=[{"type": "web", "quantity": 1, "size": "Standard-1X", "command": cmd}])
    fake.wait_for(lambda: (tmp_path / "done").exists(), timeout=20, what="dyno wrote to db")
    assert pg.psql("select count(*) from notes where body = 'web.1'", db="appdb") == "1"
    # what the API shows is the configured URL, not the mapped one
    assert fake.get("/apps/acme/config-vars").body["DATABASE_URL"] == rds
    addon = fake.get("/apps/acme/addons").body[0]
    info = fake.get(f"/client/v11/databases/{addon['id']}").body
    assert {"name": "Status", "values": ["Available"]} in info["info"]
    assert info["num_tables"] >= 2 and info["num_bytes"] > 0
    assert info["postgres_version"].split(".")[0].isdigit()
    pg.psql("delete from notes", db="appdb")


# --- backups (data API) ---------------------------------------------------------------------

def test_backup_capture_and_public_url(fake, pg, tmp_path):
    make_app(fake, database_url=pg.app_url, formation=[], backup_seconds=1.5)
    addon = fake.get("/apps/acme/addons").body[0]
    r = fake.post(f"/client/v11/databases/{addon['id']}/backups")
    assert r.status == 201
    t = r.body
    assert t["num"] == 1 and t["from_name"] == "DATABASE" and t["to_type"] == "gof3r"
    assert "s3cret" not in json.dumps(t)
    seen = []
    while True:
        cur = fake.get(f"/client/v11/apps/acme/transfers/{t['uuid']}").body
        seen.append(cur["processed_bytes"])
        if cur["finished_at"]:
            break
        time.sleep(0.2)
    assert cur["succeeded"] is True and cur["source_bytes"] > 0
    grew = [b for b in seen if 0 < b < seen[-1]]
    assert grew, f"processed_bytes never grew gradually: {seen}"
    assert seen == sorted(seen)
    lst = fake.get("/client/v11/apps/acme/transfers").body
    assert [x["uuid"] for x in lst] == [t["uuid"]]
    verbose = fake.get("/client/v11/apps/acme/transfers/1?verbose=true").body
    assert verbose["logs"]
    url = fake.post("/client/v11/apps/acme/transfers/1/actions/public-url").body["url"]
    assert url.startswith(fake.public_base + "/")
    # plain GET without any auth: a real pg_dump -Fc archive
    r = http("GET", url)
    assert r.status == 200 and r.raw[:5] == b"PGDMP"
    assert int(r.headers["content-length"]) == len(r.raw) == cur["processed_bytes"]
    dump = tmp_path / "b001.dump"
    dump.write_bytes(r.raw)
    listing = subprocess.run(["pg_restore", "--list", str(dump)], capture_output=True, text=True,
                             check=True).stdout
    assert "TABLE DATA public items" in listing
    assert http("HEAD", url).headers["content-length"] == str(len(r.raw))
    part = http("GET", url, headers={"Range": "bytes=5-9"})
    assert part.status == 206 and part.raw == r.raw[5:10]
    assert part.headers["content-range"] == f"bytes 5-9/{len(r.raw)}"
    # the token must never go there: S3 refuses and the fake records it
    fake.admin("DELETE", "/requests")
    bad = http("GET", url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert bad.status == 400 and b"InvalidArgument" in bad.raw
    log = fake.admin("GET", "/requests")
    assert [(e["server"], e["authorization"], e["status"]) for e in log] == [("public", "valid", 400)]
    assert http("GET", url.replace("/backups/", "/backups/x")).status == 403
    # a second URL does not invalidate the first
    url2 = fake.post("/client/v11/apps/acme/transfers/1/actions/public-url").body["url"]
    assert url2 != url and http("GET", url).status == 200
    # injected backup failure
    fake.admin("POST", "/faults", {"backup_status": "failed", "app": "acme"})
    t2 = fake.post(f"/client/v11/databases/{addon['id']}/backups").body
    fake.wait_for(lambda: fake.get(f"/client/v11/apps/acme/transfers/{t2['num']}").body["finished_at"],
                  what="failed backup finished")
    done = fake.get(f"/client/v11/apps/acme/transfers/{t2['num']}?verbose=true").body
    assert done["succeeded"] is False and any(l["level"] == "error" for l in done["logs"])
    r = fake.post(f"/client/v11/apps/acme/transfers/{t2['num']}/actions/public-url")
    assert r.status == 422
    # data API: unknown database, no access
    assert fake.get("/client/v11/databases/nope").status == 404
    fake.admin("POST", "/tokens", {"token": "other-tok", "apps": []})
    assert fake.get(f"/client/v11/databases/{addon['id']}", token="other-tok").status == 403
    assert fake.get(f"/client/v11/databases/{addon['id']}", token="bad").status == 401


# --- faults -----------------------------------------------------------------------------------

def test_faults(fake, pg):
    make_app(fake, database_url=pg.app_url, formation=[
        {"type": "web", "quantity": 1, "size": "Standard-1X", "command": "exec sleep 600"}])
    fake.admin("POST", "/faults", {"method": "PATCH", "path_regex": "^/apps/acme/formation$",
                                   "status": 500, "id": "internal_server_error",
                                   "message": "boom", "times": 1, "after": 1})
    upd = {"updates": [{"type": "web", "quantity": 2}]}
    assert fake.patch("/apps/acme/formation", upd).status == 200        # "after": 1 lets one by
    r = fake.patch("/apps/acme/formation", {"updates": [{"type": "web", "quantity": 3}]})
    assert (r.status, r.body["id"], r.body["message"]) == (500, "internal_server_error", "boom")
    assert fake.get("/apps/acme/formation/web").body["quantity"] == 2   # not applied
    assert fake.patch("/apps/acme/formation", {"updates": [{"type": "web", "quantity": 0}]}).status == 200
    # "when": "after": the change happens, the client sees an error (a lost answer)
    fake.admin("POST", "/faults", {"method": "PATCH", "path_regex": "^/apps/acme$",
                                   "status": 503, "id": "unavailable", "when": "after"})
    r = fake.patch("/apps/acme", {"maintenance": True})
    assert r.status == 503
    assert fake.get("/apps/acme").body["maintenance"] is True
    fake.admin("POST", "/faults", {"path_regex": "^/apps/acme$", "status": 500, "times": None})
    assert fake.get("/apps/acme").status == 500 and fake.get("/apps/acme").status == 500
    assert fake.admin("GET", "/faults")["faults"]
    fake.admin("DELETE", "/faults")
    assert fake.get("/apps/acme").status == 200


# --- secrets and shutdown ---------------------------------------------------------------------

def test_state_and_log_never_show_secrets(fake, pg):
    make_app(fake, database_url=pg.app_url, formation=[])
    fake.get("/apps/acme/config-vars")
    state = fake.state("acme")
    assert "s3cret" not in json.dumps(state)
    assert "DATABASE_URL" in state["config_var_names"]
    with open(fake.log_file, errors="replace") as f:
        text = f.read()
    assert TOKEN not in text and "s3cret" not in text


def test_shutdown_kills_every_dyno(tmp_path, schema):
    proc, base, public, _ = start_fake(str(tmp_path))
    try:
        c = Client(base, public, schema)
        # dynos that ignore SIGTERM and leave a child behind
        cmd = "trap '' TERM; sleep 600 & sleep 601 & wait"
        c.admin("POST", "/apps", {"name": "doomed", "dyno_start_seconds": 0.2, "formation": [
            {"type": "web", "quantity": 2, "size": "Standard-1X", "command": cmd}]})
        c.wait_for(lambda: all(d["pid"] for d in c.state("doomed")["dynos"]), what="pids")
        pids = [d["pid"] for d in c.state("doomed")["dynos"]]
        time.sleep(0.3)
        children = subprocess.run(["pgrep", "-g", ",".join(map(str, pids))], capture_output=True,
                                  text=True).stdout.split()
        assert len(children) >= 6, children            # bash + 2 sleeps per dyno
    finally:
        stop_fake(proc)
    assert proc.returncode is not None
    time.sleep(0.2)
    alive = [int(p) for p in children if pid_alive(int(p))]
    assert not alive, f"processes outlived the fake: {alive}"
    # SIGKILL of the fake: the dyno shells die with it (PR_SET_PDEATHSIG)
    proc, base, public, _ = start_fake(str(tmp_path))
    c = Client(base, public, schema)
    c.admin("POST", "/apps", {"name": "doomed", "dyno_start_seconds": 0.2, "formation": [
        {"type": "web", "quantity": 1, "size": "Standard-1X", "command": "trap '' TERM; sleep 600"}]})
    c.wait_for(lambda: all(d["pid"] for d in c.state("doomed")["dynos"]), what="pids")
    pid = c.state("doomed")["dynos"][0]["pid"]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    c.wait_for(lambda: not pid_alive(pid), timeout=5, what="dyno shell died with the fake")
    subprocess.run(["pkill", "-KILL", "-g", str(pid)], check=False)   # its own group only
