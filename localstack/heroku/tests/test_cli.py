"""The real Heroku CLI (npm package `heroku`, pinned) drives the fake.

HEROKU_HOST may be a full http URL (the CLI then uses that scheme, host and port for the
Platform API), and HEROKU_DATA_HOST a bare host name: data API requests keep the Platform API's
scheme and port, so one port serves both. The CLI sends the token only to *.heroku.com and
localhost/127.0.0.1 hosts, which 127.0.0.1 is.
"""

import os
import re
import shutil
import subprocess
import urllib.parse

import pytest
from conftest import TOKEN, http

CLI_VERSION = os.environ.get("HEROKU_CLI_VERSION", "11.10.0")
CLI_DIR = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                       "heroku2rds", "heroku-cli")
CLI_BIN = os.path.join(CLI_DIR, "node_modules", ".bin", "heroku")


def installed_version():
    pkg = os.path.join(CLI_DIR, "node_modules", "heroku", "package.json")
    if not os.path.exists(pkg):
        return None
    import json
    with open(pkg) as f:
        return json.load(f).get("version")


@pytest.fixture(scope="module")
def cli(fake_server, tmp_path_factory):
    if os.environ.get("HEROKU2RDS_SKIP_HEROKU_CLI") == "1":
        pytest.skip("HEROKU2RDS_SKIP_HEROKU_CLI=1")
    if installed_version() != CLI_VERSION:
        if not shutil.which("npm"):
            pytest.fail("npm is needed to install the Heroku CLI (apt-get install npm), or set "
                        "HEROKU2RDS_SKIP_HEROKU_CLI=1")
        os.makedirs(CLI_DIR, exist_ok=True)
        subprocess.run(["npm", "install", "--prefix", CLI_DIR, "--no-audit", "--no-fund",
                        "--loglevel=error", f"heroku@{CLI_VERSION}"], check=True, timeout=900)
    assert installed_version() == CLI_VERSION
    home = str(tmp_path_factory.mktemp("cli-home"))   # no netrc, no keychain, no config
    base = fake_server["base"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEROKU")}
    env.update({
        "HOME": home, "XDG_CONFIG_HOME": home + "/.config", "XDG_CACHE_HOME": home + "/.cache",
        "XDG_DATA_HOME": home + "/.local/share",
        "HEROKU_API_KEY": TOKEN, "HEROKU_HOST": base,
        "HEROKU_DATA_HOST": urllib.parse.urlsplit(base).hostname,
        "HEROKU_PARTICLEBOARD_URL": base,
        "NO_COLOR": "1", "FORCE_COLOR": "0", "COLUMNS": "200",
        "HEROKU_SKIP_ANALYTICS": "1", "HEROKU_DISABLE_AUTOUPDATE": "1",
        "PATH": os.path.dirname(CLI_BIN) + os.pathsep + os.environ.get("PATH", ""),
    })

    def run(*args, ok=True, timeout=120, env_extra=None):
        p = subprocess.run([CLI_BIN, *args], env=dict(env, **(env_extra or {})),
                           capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        out = p.stdout + p.stderr
        if ok and p.returncode != 0:
            raise AssertionError(f"heroku {' '.join(args)} exited {p.returncode}:\n{out}")
        if not ok and p.returncode == 0:
            raise AssertionError(f"heroku {' '.join(args)} should have failed:\n{out}")
        return p.stdout, out
    return run


def test_cli_drives_the_fake(cli, fake, pg):
    f = fake
    f.admin("POST", "/next-database-url", {"url": pg.app_url})

    # apps:create / apps:info
    out, _ = cli("apps:create", "cli-demo", "--stack", "heroku-24", "--region", "us")
    app = f.state("cli-demo")["app"]
    assert app["stack"]["name"] == "heroku-24" and app["owner"]["email"] == "owner@example.com"
    out, _ = cli("apps:info", "-a", "cli-demo")
    assert "=== cli-demo" in out and "owner@example.com" in out and "heroku-24" in out
    assert "us" in out

    # addons:create heroku-postgresql backed by the URL given to the fake
    out, allout = cli("addons:create", "heroku-postgresql:essential-0", "-a", "cli-demo")
    st = f.state("cli-demo")
    addon = st["addons"][0]
    assert addon["plan"]["name"] == "heroku-postgresql:essential-0"
    assert f"Created {addon['name']} as DATABASE_URL" in allout
    assert f.admin("GET", "/apps/cli-demo/config-vars")["DATABASE_URL"] == pg.app_url
    out, _ = cli("addons", "-a", "cli-demo")
    assert addon["name"] in out and "essential-0" in out and "as DATABASE" in out

    # addons:attach / addons:detach
    out, allout = cli("addons:attach", addon["name"], "-a", "cli-demo", "--as", "HEROKU_POSTGRESQL_ONYX")
    assert "Attaching" in allout and "HEROKU_POSTGRESQL_ONYX" in allout
    names = {a["name"] for a in f.state("cli-demo")["attachments"]}
    assert names == {"DATABASE", "HEROKU_POSTGRESQL_ONYX"}
    out, allout = cli("addons:detach", "HEROKU_POSTGRESQL_ONYX", "-a", "cli-demo")
    assert {a["name"] for a in f.state("cli-demo")["attachments"]} == {"DATABASE"}
    # the last billing attachment cannot go: the CLI shows Heroku's error
    _, allout = cli("addons:detach", "DATABASE", "-a", "cli-demo", ok=False)
    assert "Cannot destroy last attachment to billing app" in allout

    # maintenance
    cli("maintenance:on", "-a", "cli-demo")
    assert f.state("cli-demo")["maintenance"] is True
    out, _ = cli("maintenance", "-a", "cli-demo")
    assert out.strip() == "on"
    cli("maintenance:off", "-a", "cli-demo")
    assert f.state("cli-demo")["maintenance"] is False
    out, _ = cli("maintenance", "-a", "cli-demo")
    assert out.strip() == "off"

    # config, config:set, config:unset
    _, allout = cli("config:set", "FOO=bar", "BAZ=qux", "-a", "cli-demo")
    v = max(r["version"] for r in f.state("cli-demo")["releases"])
    assert f"v{v}" in allout
    out, _ = cli("config", "-a", "cli-demo")
    assert re.search(r"^FOO:\s+bar$", out, re.M) and re.search(r"^BAZ:\s+qux$", out, re.M)
    assert "DATABASE_URL" in out
    cli("config:unset", "BAZ", "-a", "cli-demo")
    cfg = f.admin("GET", "/apps/cli-demo/config-vars")
    assert "BAZ" not in cfg and cfg["FOO"] == "bar"
    _, allout = cli("config:set", "DATABASE_URL=postgres://x@y/z", "-a", "cli-demo", ok=False)
    assert "Cannot overwrite attachment values DATABASE_URL" in allout

    # releases
    out, _ = cli("releases", "-a", "cli-demo")
    rels = f.state("cli-demo")["releases"]
    for r in rels:
        assert f"v{r['version']}" in out
    assert "Remove BAZ config vars" in out and "Attach DATABASE" in out
    assert f"Current: v{max(r['version'] for r in rels)}" in out

    # ps, ps:scale, ps:wait (the formation a deployed Procfile would give)
    f.admin("POST", "/apps/cli-demo/settings", {
        "dyno_start_seconds": 0.5, "dyno_stop_grace_seconds": 1,
        "formation_commands": {"web": "exec sleep 700", "worker": "exec sleep 701"}})
    _, allout = cli("ps:scale", "web=2", "worker=1:Standard-2X", "-a", "cli-demo")
    assert "web at 2:Standard-1X" in allout and "worker at 1:Standard-2X" in allout
    dynos = {d["name"]: d for d in f.state("cli-demo")["dynos"]}
    assert set(dynos) == {"web.1", "web.2", "worker.1"}
    cli("ps:wait", "-a", "cli-demo", "--wait-interval", "10", timeout=60)
    st = f.state("cli-demo")
    assert {d["state"] for d in st["dynos"]} == {"up"}      # ps:wait returned only when up
    out, _ = cli("ps", "-a", "cli-demo")
    assert "=== web (Standard-1X): exec sleep 700 (2)" in out
    assert "=== worker (Standard-2X): exec sleep 701 (1)" in out
    assert re.search(r"^web\.1: up ", out, re.M) and re.search(r"^worker\.1: up ", out, re.M)
    cli("ps:scale", "web=0", "worker=0", "-a", "cli-demo")
    assert all(fm["quantity"] == 0 for fm in f.state("cli-demo")["formation"])
    f.wait_for(lambda: f.state("cli-demo")["dynos"] == [], what="dynos gone")
    out, _ = cli("ps", "-a", "cli-demo")
    assert "No dynos on cli-demo" in out

    # pg:info
    out, _ = cli("pg:info", "-a", "cli-demo")
    assert "=== DATABASE_URL" in out and "Essential 0" in out
    tables = pg.psql("select count(*) from pg_tables where schemaname = 'public'", db="appdb")
    assert re.search(rf"^Tables:\s+{tables}$", out, re.M)
    version = pg.psql("show server_version", db="appdb").split()[0]
    assert re.search(rf"^PG Version:\s+{re.escape(version)}$", out, re.M)
    assert addon["name"] in out

    # pg:backups:capture and pg:backups:url
    f.admin("POST", "/apps/cli-demo/settings", {"backup_seconds": 0.5})
    _, allout = cli("pg:backups:capture", "-a", "cli-demo", timeout=120)
    assert "Backing up DATABASE to b001... done" in allout
    t = f.state("cli-demo")["transfers"]
    assert len(t) == 1 and t[0]["succeeded"] is True
    out, _ = cli("pg:backups", "-a", "cli-demo")
    assert "b001" in out and "Completed" in out
    f.admin("DELETE", "/requests")
    out, _ = cli("pg:backups:url", "-a", "cli-demo")
    url = out.strip()
    assert url.startswith(f.public_base + "/__public/backups/")
    r = http("GET", url)
    assert r.status == 200 and r.raw[:5] == b"PGDMP" and len(r.raw) == t[0]["processed_bytes"]
    # the CLI asked the data API with its token, and the Accept header
    log = f.admin("GET", "/requests")
    api = [e for e in log if e["server"] == "api"]
    assert api and all(e["authorization"] == "valid" and "version=3" in (e["accept"] or "")
                       for e in api)
    assert any(e["path"].endswith("/actions/public-url") for e in api)


def test_cli_sees_the_unkind_parts(cli, fake, pg):
    """Followers in pg:info, credential and pooler attachments, a failed release phase, a token
    that expires (auth:token's warning)."""
    f = fake
    f.admin("POST", "/apps", {"name": "cli-more", "database_url": pg.app_url, "formation": [
        {"type": "release", "quantity": 0, "size": "Standard-1X", "command": "exit 1"}],
        "release_seconds": 0.2, "credentials": {"analyst": pg.other_url}})
    leader = f.get("/apps/cli-more/addons").body[0]
    follower = f.admin("POST", "/apps/cli-more/addons", {"database_url": pg.other_url,
                                                         "follows": leader["name"]})
    color = follower["attachment"]["name"]

    # pg:info resolves Following / Followers to attachment names
    out, _ = cli("pg:info", "-a", "cli-more")
    assert re.search(r"^Following:\s+DATABASE$", out, re.M), out
    assert re.search(rf"^Followers:\s+{color}$", out, re.M), out

    # addons:attach --credential (asks /addons/X/config/credential:NAME first)
    _, allout = cli("addons:attach", leader["name"], "--credential", "analyst", "--as", "ANALYST",
                    "-a", "cli-more")
    assert "Setting ANALYST config vars and restarting" in allout
    att = f.get("/apps/cli-more/addon-attachments/ANALYST").body
    assert att["namespace"] == "credential:analyst"
    assert f.admin("GET", "/apps/cli-more/config-vars")["ANALYST_URL"] == pg.other_url

    # pg:connection-pooling:attach (data API)
    _, allout = cli("pg:connection-pooling:attach", "DATABASE", "-a", "cli-more")
    assert "Setting DATABASE_CONNECTION_POOL config vars and restarting" in allout
    pool = f.get("/apps/cli-more/addon-attachments/DATABASE_CONNECTION_POOL").body
    assert pool["namespace"] == "connection-pooling:default"

    # those releases ran the release phase (exit 1): the CLI shows them failed
    f.wait_for(lambda: all(r["status"] != "pending" for r in f.state("cli-more")["releases"]),
               what="release phases done")
    out, _ = cli("releases", "-a", "cli-more")
    assert "release command failed" in out and "Attach ANALYST" in out

    # auth:token warns about a token that expires
    f.admin("POST", "/tokens", {"token": "cli-sso-token", "expires_in": 8 * 3600})
    out, allout = cli("auth:token", env_extra={"HEROKU_API_KEY": "cli-sso-token"})
    assert out.strip() == "cli-sso-token" and "token will expire" in allout
    _, allout = cli("auth:token")
    assert "token will expire" not in allout
