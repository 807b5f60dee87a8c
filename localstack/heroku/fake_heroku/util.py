"""Constants and small helpers shared by the whole fake: ids, times, redaction, the log, free
ports, and Heroku's error answer (HerokuError)."""

import os
import re
import socket
import sys
import time
import uuid


DEFAULT_TOKEN = os.environ.get("FAKE_HEROKU_TOKEN", "fake-heroku-token-0000-0000-000000000000")
DEFAULT_EMAIL = "owner@example.com"
DEFAULT_RATE_LIMIT = 4500          # Heroku's per-account bucket
DEFAULT_REFILL_PER_SECOND = 75 / 60.0
PAGE_DEFAULT = 200
PAGE_MAX = 1000
PUBLIC_URL_TTL = 3600              # like X-Amz-Expires=3600 on real backup URLs

ACCEPT_RE = re.compile(r"application/vnd\.heroku\+json;\s*version=3(\.[a-z]+)?\b")
DOC_URL = "https://devcenter.heroku.com/articles/platform-api-reference"

DYNO_SIZES = ["Eco", "Basic", "Standard-1X", "Standard-2X", "Performance-M", "Performance-L",
              "Performance-L-RAM", "Performance-XL", "Performance-2XL",
              "Private-S", "Private-M", "Private-L", "Shield-S", "Shield-M", "Shield-L"]
SIZE_BY_LOWER = {s.lower(): s for s in DYNO_SIZES}
MAX_QUANTITY = 100

PG_COLORS = ["AMBER", "AQUA", "BLACK", "BLUE", "BRONZE", "BROWN", "CHARCOAL", "COBALT", "COPPER",
             "CRIMSON", "CYAN", "GOLD", "GRAY", "GREEN", "IVORY", "JADE", "LIME", "MAGENTA",
             "MAROON", "MAUVE", "NAVY", "OLIVE", "ONYX", "ORANGE", "PINK", "PUCE", "PURPLE", "RED",
             "ROSE", "SILVER", "TEAL", "VIOLET", "WHITE", "YELLOW"]
ADJECTIVES = ["amorphous", "angular", "aerodynamic", "clean", "concave", "convex", "cubic",
              "curved", "flat", "opaque", "polished", "rigid", "round", "shaped", "sinuous",
              "solid", "spherical", "symmetrical", "transparent", "triangular", "vertical"]
NOUNS = ["river", "meadow", "harbor", "canyon", "forest", "island", "summit", "valley"]
PLAN_CENTS = {"essential-0": 500, "essential-1": 900, "essential-2": 2000, "mini": 500,
              "basic": 900, "standard-0": 5000, "standard-2": 20000, "premium-0": 20000}
SERVICE_NAMES = {"heroku-postgresql": "Heroku Postgres", "scheduler": "Heroku Scheduler",
                 "hirefire-resource": "HireFire", "rails-autoscale": "Rails Autoscale",
                 "judoscale": "Judoscale"}
DEFAULT_PORTS = {"postgres": 5432, "postgresql": 5432, "redis": 6379, "rediss": 6379,
                 "http": 80, "https": 443, "mysql": 3306, "amqp": 5672}

NAMESPACE = uuid.UUID("5d9f4c1e-7a43-4c3e-9b1f-1c0de0fa4e01")


def stable_id(kind, name):
    """Deterministic UUID for catalogue objects (regions, stacks, plans, services)."""
    return str(uuid.uuid5(NAMESPACE, f"{kind}:{name}"))


def new_id():
    return str(uuid.uuid4())


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def redact(text):
    """Hides passwords in URLs (scheme://user:PASSWORD@host) and anything token-like we know."""
    if not isinstance(text, str):
        text = str(text)
    text = re.sub(r"(\w+://[^:/@\s]*:)[^@/\s]+@", r"\1REDACTED@", text)
    # STATE lives in model, which imports this module: look it up at call time (it is not
    # there while the package is still being imported).
    state = getattr(sys.modules.get(__package__ + ".model"), "STATE", None)
    for tok in list(state.tokens.keys()) if state is not None else []:
        if tok and tok in text:
            text = text.replace(tok, "REDACTED")
    return text


def log(msg):
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} fake-heroku: {redact(msg)}\n")
    sys.stderr.flush()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class HerokuError(Exception):
    """An error answered with Heroku's body {"id","message","url"} (plus optional extras)."""

    def __init__(self, status, id_, message, **extra):
        super().__init__(message)
        self.status, self.id, self.message, self.extra = status, id_, message, extra

    def body(self):
        b = {"id": self.id, "message": self.message, "url": DOC_URL + "#errors"}
        b.update(self.extra)
        return b


def not_found(what="that"):
    return HerokuError(404, "not_found", f"Couldn't find {what}.", resource=None)


def invalid(message):
    return HerokuError(422, "invalid_params", message)
