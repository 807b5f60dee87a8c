"""Every Platform API endpoint the fake serves answers JSON that validates against the official
schema (the Client validates each answer; this test makes sure every route was exercised)."""

import copy

import fake_heroku
import pytest
from conftest import TOKEN, make_app

# Routes that by design only ever answer an error (a 404 like Heroku's for an app without a
# pipeline); their error bodies are still checked by the client.
ERROR_ONLY = {"/apps/(?P<app>[^/]+)/pipeline-couplings"}
# Routes the real CLI uses that the schema does not describe (answers checked by hand below).
NOT_IN_SCHEMA = {"/addons/(?P<addon>[^/]+)/config/(?P<ns>[^/]+)"}


def test_validator_is_strict(fake, pg, schema):
    if schema is None:
        pytest.skip("the official schema was not found (see the warning above)")
    """The validator itself catches missing, extra and malformed fields (else the rest means
    nothing)."""
    make_app(fake, database_url=pg.app_url)
    app = fake.get("/apps/acme").body
    for mutate in (lambda a: a.pop("maintenance"), lambda a: a.update(extra=1),
                   lambda a: a.update(id="not-a-uuid"), lambda a: a["owner"].update(x=1),
                   lambda a: a.update(created_at="yesterday"), lambda a: a.update(name="Bad_Name"),
                   lambda a: a.update(maintenance="yes")):
        bad = copy.deepcopy(app)
        mutate(bad)
        with pytest.raises(AssertionError):
            schema.validate("GET", "/apps/acme", bad)
    with pytest.raises(AssertionError):
        schema.validate("GET", "/apps/acme/dynos", [{"name": "web.1"}])


def test_every_platform_route_validates(fake, pg, schema):
    if schema is None:
        pytest.skip("the official schema was not found (see the warning above)")
    make_app(fake, database_url=pg.app_url)
    fake.admin("POST", "/next-database-url", {"url": pg.other_url})
    f = fake
    assert f.get("/account").status == 200
    assert f.get("/account/rate-limits").status == 200
    assert f.post("/apps", {"name": "second-app", "region": "eu", "stack": "heroku-22"}).status == 201
    assert f.post("/apps", {}).status == 201       # generated name
    assert f.get("/apps").status == 200
    app = f.get("/apps/acme").body
    assert f.get("/apps/" + app["id"]).status == 200
    assert f.patch("/apps/acme", {"maintenance": True}).body["maintenance"] is True
    assert f.get("/apps/acme/collaborators").status == 200
    assert f.get("/apps/acme/pipeline-couplings").status == 404
    # formation
    forms = f.get("/apps/acme/formation").body
    assert {x["type"] for x in forms} == {"web", "worker"}
    assert f.get("/apps/acme/formation/web").status == 200
    assert f.get("/apps/acme/formation/" + forms[0]["id"]).status == 200
    assert f.patch("/apps/acme/formation", {"updates": [{"type": "web", "quantity": 1}]}).status == 200
    assert f.patch("/apps/acme/formation/worker", {"quantity": 2, "size": "standard-2x"}).status == 200
    # dynos
    dynos = f.get("/apps/acme/dynos").body
    assert dynos
    assert f.get("/apps/acme/dynos/web.1").status == 200
    run = f.post("/apps/acme/dynos", {"command": "sleep 30", "env": {"X": "1"}, "attach": False,
                                     "size": "basic", "type": "run", "time_to_live": 60})
    assert run.status == 201
    assert f.post(f"/apps/acme/dynos/{run.body['name']}/actions/stop").status == 202
    assert f.delete("/apps/acme/dynos/web.1").status == 202
    assert f.delete("/apps/acme/dynos").status == 202
    # config vars and releases
    assert f.get("/apps/acme/config-vars").status == 200
    assert f.patch("/apps/acme/config-vars", {"NEW": "1", "FOO": None}).status == 200
    rels = f.get("/apps/acme/releases").body
    assert f.get(f"/apps/acme/releases/{rels[-1]['version']}").status == 200
    assert f.get(f"/apps/acme/releases/{rels[-1]['id']}").status == 200
    assert f.get(f"/apps/acme/releases/{rels[-1]['version']}/config-vars").status == 200
    # add-ons
    addons = f.get("/apps/acme/addons").body
    assert len(addons) == 1
    assert f.get("/addons").status == 200
    assert f.get("/addons", headers={"Accept-Expansion": "addon_service,plan"}).status == 200
    assert f.get("/addons/" + addons[0]["name"]).status == 200
    assert f.get(f"/apps/acme/addons/{addons[0]['id']}").status == 200
    assert f.post("/actions/addons/resolve", {"addon": addons[0]["name"], "app": "acme"}).status == 200
    created = f.post("/apps/acme/addons", {"plan": "heroku-postgresql:essential-0",
                                          "attachment": {"name": "SECOND"}})
    assert created.status == 201
    # attachments
    assert f.get("/addon-attachments").status == 200
    atts = f.get("/apps/acme/addon-attachments").body
    assert f.get("/apps/acme/addon-attachments",
                 headers={"Accept-Inclusion": "addon:plan,config_vars"}).status == 200
    assert f.get("/apps/acme/addon-attachments/DATABASE").status == 200
    assert f.get(f"/addons/{addons[0]['id']}/addon-attachments").status == 200
    assert f.get("/addon-attachments/" + atts[0]["id"]).status == 200
    assert f.post("/actions/addon-attachments/resolve",
                  {"addon_attachment": "DATABASE_URL", "app": "acme"}).status == 200
    extra = f.post("/addon-attachments", {"addon": addons[0]["id"], "app": "acme",
                                         "name": "HEROKU_POSTGRESQL_ONYX"})
    assert extra.status == 201
    assert f.delete("/addon-attachments/" + extra.body["id"]).status == 200
    assert f.delete(f"/apps/acme/addons/{created.body['id']}").status == 200
    # add-on config (the CLI's addons:attach --credential asks /config/credential:NAME first)
    cfg = f.get(f"/addons/{addons[0]['name']}/config").body
    assert [x["name"] for x in cfg] == ["URL"]
    r = f.get(f"/addons/{addons[0]['name']}/config/credential:analyst", validate=False)
    assert r.status == 200 and [x["name"] for x in r.body] == ["URL"]
    # OAuth authorizations: one per token of the account; the token finds its own expiry
    f.admin("POST", "/tokens", {"token": "second-token", "expires_in": 3600})
    auths = f.get("/oauth/authorizations").body
    mine = {x["access_token"]["token"]: x for x in auths}
    assert mine[TOKEN]["access_token"]["expires_in"] is None
    assert 3590 <= mine["second-token"]["access_token"]["expires_in"] <= 3600
    second = mine["second-token"]["id"]
    assert f.get(f"/oauth/authorizations/{second}").body["id"] == second
    assert f.delete(f"/oauth/authorizations/{second}").status == 200
    assert f.get("/apps", token="second-token").status == 401
    assert f.get("/regions").status == 200
    assert f.get("/stacks").status == 200

    # Every platform route of the fake answered 2xx at least once and was validated.
    import re
    hit = {(m, p) for m, p, _ in f.validated}
    missing = []
    for method, rx, fn, kind in fake_heroku.ROUTES:
        if kind != "platform" or rx.pattern.strip("^$") in ERROR_ONLY | NOT_IN_SCHEMA:
            continue
        if not any(m == method and rx.match(p) for m, p in hit):
            missing.append(f"{method} {rx.pattern}")
    assert not missing, "routes never validated: " + ", ".join(missing)
    assert len(f.validated) >= 45
    assert all(isinstance(t, str) for _, _, t in f.validated)
    assert re  # (imported for clarity above)
