"""Platform API routes: the read-only catalogue the Heroku CLI uses (regions, stacks)."""

import time

from .routing import route
from .util import iso, stable_id


# --- misc read-only catalogue used by the CLI ------------------------------------------------

@route("GET", "/regions")
def regions(c):
    now = iso(time.time())
    out = []
    for name, loc, prov in (("us", "United States", "us-east-1"), ("eu", "Europe", "eu-west-1")):
        out.append({"country": loc, "created_at": now, "description": loc, "id": stable_id("region", name),
                    "locale": "Virginia" if name == "us" else "Dublin", "name": name,
                    "private_capable": False,
                    "provider": {"name": "amazon-web-services", "region": prov},
                    "updated_at": now})
    return c.list(out)


@route("GET", "/stacks")
def stacks(c):
    now = iso(time.time())
    return c.list([{"default": n == "heroku-24", "created_at": now, "id": stable_id("stack", n),
                    "name": n, "state": "supported", "updated_at": now}
                   for n in ("heroku-22", "heroku-24")])
