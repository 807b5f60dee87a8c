"""The model: accounts, tokens (OAuth authorizations), apps and what they hold (formation,
releases, dynos, add-ons, attachments, backup transfers, the scheduler and autoscaler add-ons'
jobs), and State, whose one instance STATE holds everything (guarded by STATE.lock)."""

import os
import random
import threading
import time
from urllib.parse import unquote

from .util import (ADJECTIVES, DEFAULT_EMAIL, DEFAULT_RATE_LIMIT, DEFAULT_REFILL_PER_SECOND,
                   DEFAULT_TOKEN, PLAN_CENTS, SERVICE_NAMES, iso, new_id, redact, stable_id)


class Account:
    def __init__(self, email):
        self.id, self.email, self.created_at = new_id(), email, time.time()

    def json(self):
        t = iso(self.created_at)
        return {"allow_tracking": True, "beta": False, "created_at": t, "email": self.email,
                "federated": False, "id": self.id, "identity_provider": None, "last_login": t,
                "name": self.email.split("@")[0], "sms_number": None, "suspended_at": None,
                "delinquent_at": None, "two_factor_authentication": False, "updated_at": t,
                "verified": True, "acknowledged_msa": True, "acknowledged_msa_at": t,
                "italian_customer_terms": None, "italian_partner_terms": None,
                "default_organization": None, "default_team": None}


class Token:
    """An API token, shown by GET /oauth/authorizations as one OAuth authorization of its account.

    expires_at: None = never; after it (or with expired=True) requests answer expired_status
    (401 unauthorized or 403 forbidden)."""

    def __init__(self, value, account, two_factor_required=False, expired=False, apps=None,
                 two_factor_code=None, expires_at=None, expired_status=401, description=None):
        self.value, self.account = value, account
        self.two_factor_required, self.expired = two_factor_required, expired
        self.apps = list(apps) if apps is not None else ["*"]
        self.two_factor_code = two_factor_code
        self.expires_at, self.expired_status = expires_at, expired_status
        self.description = description
        self.id, self.token_id = new_id(), new_id()     # authorization id, access token id
        self.created_at = time.time()

    def may_access(self, app):
        return "*" in self.apps or app.name in self.apps or app.id in self.apps

    def is_expired(self, now=None):
        return self.expired or (self.expires_at is not None
                                and (now or time.time()) >= self.expires_at)

    def expires_in(self):
        """Seconds left (an integer, 0 once expired), None for a token that never expires."""
        if self.expired:
            return 0
        if self.expires_at is None:
            return None
        return max(0, int(self.expires_at - time.time()))

    def authorization_json(self):
        """The schema's oauth-authorization (what `heroku auth:token` reads)."""
        t = iso(self.created_at)
        return {"access_token": {"expires_in": self.expires_in(), "id": self.token_id,
                                 "token": self.value},
                "client": None, "created_at": t, "grant": None, "id": self.id,
                "refresh_token": None, "scope": ["global"], "updated_at": t,
                "user": {"id": self.account.id, "email": self.account.email,
                         "full_name": self.account.email.split("@")[0]}}


class Formation:
    def __init__(self, app, type_, quantity, size, command):
        self.id, self.app, self.type = new_id(), app, type_
        self.quantity, self.size, self.command = quantity, size, command
        self.created_at = self.updated_at = time.time()

    def json(self):
        return {"app": self.app.ref(), "command": self.command, "created_at": iso(self.created_at),
                "id": self.id, "quantity": self.quantity, "size": self.size, "type": self.type,
                "updated_at": iso(self.updated_at)}


class Release:
    def __init__(self, app, version, description, user, config, status="pending"):
        self.id, self.app, self.version = new_id(), app, version
        self.description, self.user, self.status = description, user, status
        self.config = dict(config)                  # snapshot the release's dynos run with
        self.created_at = self.updated_at = time.time()
        self.addon_plan_names = sorted({a.plan for a in app.attached_addons()})
        self.fail = False                           # injected fault
        self.due = self.created_at                  # not decided before (release_seconds)
        # release phase: the one-off dyno running the formation's release command for this
        # release, its deadline, and its outcome (exit status, or stopped/timed out)
        self.phase_dyno = None
        self.phase_deadline = None
        self.phase_result = None                    # None (running) | "ok" | "failed"

    def json(self):
        return {"addon_plan_names": self.addon_plan_names, "app": self.app.ref(),
                "created_at": iso(self.created_at), "description": self.description,
                "id": self.id, "updated_at": iso(self.updated_at), "slug": None,
                "status": self.status,
                "user": {"id": self.user.id, "email": self.user.email},
                "version": self.version, "current": self.app.current_release() is self,
                "output_stream_url": None}


class Dyno:
    """One dyno: a real `bash -c command` process in its own process group.

    phase: spawn (process to be started) -> starting -> up; stopping (SIGTERM sent, SIGKILL at
    kill_at; then removed or respawned per after_stop); crashed (respawn at restart_at);
    complete (a one-off dyno whose process ended: listed until complete_until, then removed).
    A one-off dyno runs with the config of its own release (`release`); `stopped` records that
    it was stopped (API stop, restart, time_to_live, release phase timeout) rather than ending
    by itself; `phase_of` is the release whose release phase it runs."""

    def __init__(self, app, name, type_, size, command, oneoff=False, env=None, ttl=None):
        self.id, self.app, self.name, self.type = new_id(), app, name, type_
        self.size, self.command, self.oneoff = size, command, oneoff
        self.extra_env = dict(env or {})
        self.ttl_deadline = time.time() + ttl if ttl else None
        self.phase, self.after_stop = "spawn", None
        self.proc, self.port, self.release = None, None, None
        self.started_at = self.kill_at = self.restart_at = None
        self.exit_status = None
        self.stopped, self.complete_until, self.phase_of = False, None, None
        self.created_at = self.updated_at = time.time()

    @property
    def state(self):
        if self.phase in ("spawn", "starting"):
            return "starting"
        if self.phase == "stopping":
            return "starting" if self.after_stop == "restart" else "down"
        return self.phase  # up, crashed, complete

    def json(self):
        rel = self.release or self.app.current_release()
        return {"attach_url": None, "command": self.command, "created_at": iso(self.created_at),
                "id": self.id, "name": self.name,
                "release": {"id": rel.id, "version": rel.version} if rel else None,
                "app": self.app.ref(), "size": self.size, "state": self.state, "type": self.type,
                "updated_at": iso(self.updated_at)}


class Addon:
    """An add-on. heroku-postgresql ones have a database_url, optional named credentials
    (name -> URL, for credential:NAME attachments), an optional pooler URL (the
    connection-pooling:default attachment; the database URL itself when None) and may follow a
    leader add-on. Other services (scheduler, autoscalers) have no config vars."""

    def __init__(self, app, plan, database_url=None, name=None):
        self.id, self.app, self.plan = new_id(), app, plan        # app = billing app
        prefix = self.service.replace("heroku-", "", 1)    # postgresql-..., scheduler-...
        self.name = name or f"{prefix}-{random.choice(ADJECTIVES)}-{random.randint(10000, 99999)}"
        self.database_url = database_url
        self.credentials = {}
        self.pooler_url = None
        self.leader = None
        self.state = "provisioned"
        self.created_at = self.updated_at = time.time()

    @property
    def service(self):
        return self.plan.split(":", 1)[0]

    @property
    def is_postgres(self):
        return self.service == "heroku-postgresql"

    def attachments(self):
        return [a for a in STATE.attachments.values() if a.addon is self]

    def followers(self):
        return [a for a in STATE.addons.values() if a.leader is self]

    def url_for(self, namespace):
        """The URL an attachment with that namespace carries (None: the add-on has no vars)."""
        if not self.is_postgres:
            return None
        ns = namespace or ""
        if ns.startswith("credential:"):
            return self.credentials.get(ns.split(":", 1)[1], self.database_url)
        if ns.startswith("connection-pooling:"):
            cred = ns.split(":", 1)[1]
            if cred != "default" and cred in self.credentials:
                return self.credentials[cred]
            return self.pooler_url or self.database_url
        return self.database_url

    def json(self, expand=()):
        plan_short = self.plan.split(":", 1)[1] if ":" in self.plan else self.plan
        cents = PLAN_CENTS.get(plan_short, 5000) if self.is_postgres else 0
        plan = {"id": stable_id("plan", self.plan), "name": self.plan}
        service = {"id": stable_id("service", self.service), "name": self.service}
        if "plan" in expand:
            plan.update({"price": {"cents": cents, "contract": False, "unit": "month"},
                         "human_name": plan_short.replace("-", " ").title(),
                         "description": f"{self.service.title()} {plan_short}"})
        if "addon_service" in expand:
            service.update({"human_name": SERVICE_NAMES.get(self.service, self.service.title()),
                            "state": "ga"})
        own_vars = [a.config_var for a in self.attachments()
                    if a.app is self.app and a.config_var]
        if self.is_postgres and not own_vars:
            own_vars = ["DATABASE_URL"]
        return {"actions": [], "addon_service": service,
                "billing_entity": {"id": self.app.id, "name": self.app.name, "type": "app"},
                "app": self.app.ref(),
                "billed_price": {"cents": cents, "contract": False, "unit": "month"},
                "config_vars": own_vars, "created_at": iso(self.created_at),
                "id": self.id, "name": self.name, "plan": plan,
                "provider_id": "resource" + str(abs(hash(self.id)) % 10 ** 8),
                "state": self.state, "updated_at": iso(self.updated_at),
                "web_url": f"https://data.heroku.com/datastores/{self.id}"}


class Attachment:
    """NAME sets NAME_URL on its app (Postgres add-ons; other services set nothing)."""

    def __init__(self, app, addon, name, namespace=None):
        self.id, self.app, self.addon, self.name = new_id(), app, addon, name
        self.namespace = namespace
        self.created_at = self.updated_at = time.time()

    @property
    def config_var(self):
        return self.name + "_URL" if self.addon.is_postgres else None

    @property
    def url(self):
        return self.addon.url_for(self.namespace)

    def json(self, include=()):
        addon = {"id": self.addon.id, "name": self.addon.name, "app": self.addon.app.ref()}
        j = {"addon": addon, "app": self.app.ref(), "created_at": iso(self.created_at),
             "id": self.id, "name": self.name, "namespace": self.namespace,
             "updated_at": iso(self.updated_at),
             "web_url": f"https://data.heroku.com/datastores/{self.addon.id}",
             "log_input_url": None}
        # Accept-Inclusion (used by the CLI with version=3.sdk): extra fields beyond the schema
        if "addon:plan" in include:
            addon["plan"] = {"id": stable_id("plan", self.addon.plan), "name": self.addon.plan}
        if "config_vars" in include:
            j["config_vars"] = [self.config_var] if self.config_var else []
        return j


class Transfer:
    """A PGBackups transfer (backup = pg_dump -> gof3r)."""

    def __init__(self, app, addon, num, from_name):
        self.uuid, self.app, self.addon, self.num = new_id(), app, addon, num
        self.from_name = from_name
        self.created_at = self.updated_at = time.time()
        self.started_at = self.finished_at = self.canceled_at = self.deleted_at = None
        self.succeeded = False
        self.source_bytes = 0
        self.file = None
        self.pgdump_done = False
        self.pgdump_ok = False
        self.proc = None
        self.logs = []
        self.fail = False
        self.min_seconds = app.settings["backup_seconds"]
        self.public_urls = {}         # secret -> expiry time; each signed URL stays valid

    @property
    def label(self):
        return f"b{self.num:03d}"

    def actual_bytes(self):
        try:
            return os.path.getsize(self.file) if self.file else 0
        except OSError:
            return 0

    def processed_bytes(self):
        """Grows while running: the dump's real size, paced over at least min_seconds."""
        actual = self.actual_bytes()
        if self.finished_at or not self.started_at or self.min_seconds <= 0:
            return actual
        frac = min(1.0, (time.time() - self.started_at) / self.min_seconds)
        return int(actual * frac)

    def add_log(self, level, message):
        self.logs.append({"created_at": iso(time.time()), "level": level,
                          "message": redact(message)})

    def json(self, verbose=False):
        j = {"uuid": self.uuid, "num": self.num, "from_name": self.from_name,
             "from_type": "pg_dump", "from_url": redact(self.addon.database_url),
             "to_name": "BACKUP", "to_type": "gof3r",
             "to_url": f"https://xfrtu.s3.amazonaws.com/{self.uuid}/{self.label}",
             "options": {}, "source_bytes": self.source_bytes,
             "processed_bytes": self.processed_bytes(), "succeeded": self.succeeded,
             "warnings": 0, "created_at": iso(self.created_at),
             "started_at": iso(self.started_at) if self.started_at else None,
             "finished_at": iso(self.finished_at) if self.finished_at else None,
             "canceled_at": iso(self.canceled_at) if self.canceled_at else None,
             "deleted_at": iso(self.deleted_at) if self.deleted_at else None,
             "purged_at": None, "updated_at": iso(self.updated_at), "num_keep": 25,
             "schedule": None}
        if verbose:
            j["logs"] = list(self.logs)
        return j


class App:
    """An app. settings: the timing knobs (seconds). scheduler / autoscaler: the jobs of those
    add-ons (dicts, see addon_jobs), None when the app has none. space: a Private Space."""

    def __init__(self, name, owner, region="us", stack="heroku-24", settings=None):
        self.id, self.name, self.owner = new_id(), name, owner
        self.region, self.stack = region, stack
        self.maintenance = False
        self.created_at = self.updated_at = self.released_at = time.time()
        self.config = {}
        self.formation = {}           # type -> Formation (insertion order = display order)
        self.dynos = {}               # name -> Dyno
        self.releases = []
        self.transfers = []
        self.settings = {"dyno_start_seconds": 1.0, "dyno_stop_grace_seconds": 3.0,
                         "release_seconds": 0.5, "backup_seconds": 2.0,
                         "crash_restart_seconds": 2.0, "release_phase_timeout_seconds": 3600.0,
                         "complete_linger_seconds": 1.0}
        self.settings.update(settings or {})
        self.scheduler = None
        self.autoscaler = None
        self.space = None             # {"id", "name", "shield"}

    def ref(self):
        return {"id": self.id, "name": self.name}

    def json(self):
        region = {"id": stable_id("region", self.region), "name": self.region}
        stack = {"id": stable_id("stack", self.stack), "name": self.stack}
        return {"acm": False, "archived_at": None, "buildpack_provided_description": None,
                "build_stack": stack, "created_at": iso(self.created_at),
                "git_url": f"https://git.heroku.com/{self.name}.git", "id": self.id,
                "internal_routing": None, "maintenance": self.maintenance, "name": self.name,
                "owner": {"email": self.owner.email, "id": self.owner.id},
                "organization": None, "team": None, "region": region,
                "released_at": iso(self.released_at), "repo_size": None, "slug_size": None,
                "space": dict(self.space) if self.space else None, "stack": stack,
                "updated_at": iso(self.updated_at),
                "web_url": f"https://{self.web_host()}.herokuapp.com/"}

    def web_host(self):
        # New apps get NAME-HASH.herokuapp.com; the schema caps the label at 31 characters.
        room = 30 - len(self.name) - 1
        return f"{self.name}-{self.id.replace('-', '')[:min(room, 12)]}" if room >= 4 else self.name

    def attachments(self):
        return [a for a in STATE.attachments.values() if a.app is self]

    def attached_addons(self):
        seen = []
        for a in self.attachments():
            if a.addon not in seen:
                seen.append(a.addon)
        return seen

    def attachment_vars(self):
        return {a.config_var: a for a in self.attachments() if a.config_var}

    def current_release(self):
        for r in reversed(self.releases):
            if r.status == "succeeded":
                return r
        return None


class State:
    def __init__(self):
        self.lock = threading.RLock()
        self.reset()

    def reset(self):
        self.accounts = {}
        self.tokens = {}
        self.apps = {}                # id -> App
        self.addons = {}              # id -> Addon
        self.attachments = {}         # id -> Attachment
        self.faults = []
        self.requests = []
        self.netmap = {}
        self.next_database_urls = []  # for add-ons created through the Platform API (CLI)
        self.default_database_url = os.environ.get("FAKE_HEROKU_DEFAULT_DATABASE_URL")
        self.rate = {"capacity": DEFAULT_RATE_LIMIT, "refill": DEFAULT_REFILL_PER_SECOND}
        self.buckets = {}             # account id -> [remaining(float), last_refill_time]
        self.release_faults = {}      # app name -> list of statuses for the next releases
        self.backup_faults = {}       # app name -> count of next backups to fail
        owner = self.account(DEFAULT_EMAIL)
        self.tokens[DEFAULT_TOKEN] = Token(DEFAULT_TOKEN, owner)

    def account(self, email):
        for a in self.accounts.values():
            if a.email == email:
                return a
        a = Account(email)
        self.accounts[a.id] = a
        return a

    def find_app(self, ident):
        ident = unquote(ident)
        if ident in self.apps:
            return self.apps[ident]
        for a in self.apps.values():
            if a.name == ident:
                return a
        return None

    def find_addon(self, ident, app=None):
        ident = unquote(ident)
        for a in self.addons.values():
            if a.id == ident or a.name == ident:
                return a
        if app is not None:   # an attachment name on that app also identifies the add-on
            for att in app.attachments():
                if att.name == ident:
                    return att.addon
        return None

    # --- rate limiting: one token bucket per account ---------------------------------------
    def take_rate_token(self, account, consume=True):
        now = time.time()
        b = self.buckets.setdefault(account.id, [float(self.rate["capacity"]), now])
        b[0] = min(float(self.rate["capacity"]), b[0] + (now - b[1]) * self.rate["refill"])
        b[1] = now
        if b[0] < 1.0:
            return False, 0
        if consume:
            b[0] -= 1.0
        return True, int(b[0])

    def remaining(self, account):
        return self.take_rate_token(account, consume=False)[1]


STATE = State()
