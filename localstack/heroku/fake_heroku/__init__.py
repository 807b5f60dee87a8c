"""A stateful fake of the Heroku Platform API v3 and the Heroku Postgres data API.

One process serves
  * the Platform API (/apps/..., /addons/..., /addon-attachments/..., /account, ...)
  * the Postgres data API (/client/v11/...), on the same port as the real CLI sends both to the
    same port when HEROKU_HOST is a full URL,
  * the admin API for tests (/__fake/..., no auth),
and, on a second port, the "S3" host that serves backup downloads through unauthenticated
public URLs (/__public/backups/<secret>/<name>).

Dynos are real processes (`bash -c COMMAND`, one process group each), backups are real
`pg_dump -Fc` files. Everything else lives in memory. See localstack/README.md ("Fake Heroku").

Secrets: tokens and database passwords are never written to the log or the request log.

Usage: python3 -m fake_heroku [--host 127.0.0.1] [--port 4567] [--public-port PORT+1]
       [--pid-file F] [--data-dir D]   (from localstack/heroku, or with it on PYTHONPATH)

The package, by layer (each module imports only those above it):
  util            constants and small helpers, HerokuError
  pg              Postgres helpers (network map, libpq environment, pg:info facts)
  model           the model classes and State; STATE, the one instance
  ops             app operations shared by the APIs and the supervisor (releases and their
                  release phase, attachments, add-ons, one-off and formation dynos)
  addon_jobs      what the scheduler and autoscaler add-ons do over time
  supervisor      dyno processes, releases, add-on jobs and backups over time; SUPERVISOR
                  (set by main)
  paging          Range / Next-Range / Content-Range
  routing         Response, the route table (ROUTES, @route), Ctx, the Authorization header
  public_urls     the public backup URLs (an S3 stand-in)
  handler         the HTTP request handler and injected faults
  routes_*        the routes: apps, dynos (and formation), releases (and config vars), addons
                  (and attachments), catalogue, oauth (Platform API); data (Postgres data
                  API); admin (/__fake/...)
  server          main
"""

# Importing the routes modules registers their routes in ROUTES, in this order (the order in
# which requests are matched against them).
from . import routes_apps, routes_dynos, routes_releases, routes_addons
from . import routes_catalogue, routes_oauth, routes_data, routes_admin
from .routing import ROUTES

__all__ = ["ROUTES", "routes_apps", "routes_dynos", "routes_releases", "routes_addons",
           "routes_catalogue", "routes_oauth", "routes_data", "routes_admin"]
