"""Run moto's server with heroku2rds's fixes for known moto bugs.

localstack/start runs this file with the venv's Python instead of the plain `moto_server` entry
point. Arguments are moto_server's own (-H HOST, -p PORT, ...). Nothing in site-packages is
edited: each fix below replaces one function at import time, checks that the function it replaces
still exists (so a moto upgrade that moves it fails loudly instead of silently running unpatched),
and says which moto version it was written against. Remove a fix once the pinned moto has it.

Environment read here:
  MOTO_AMIS_PATH  the AMI list (default: amis.json beside this file; moto replaces its
                  built-in list, which has no current Ubuntu LTS images, with this one).
  MOTO_PORT       set by moto itself from -p; used by moto to build URLs it returns.
  HEROKU2RDS_MOTO_PID_FILE
                  where to write this process's pid (localstack/start sets it); removed on exit.
  HEROKU2RDS_MOTO_SKIP_FIXES
                  comma-separated fix names to leave out, or `all`: to check whether a newer
                  moto still needs them (run localstack/smoke with it).
  HEROKU2RDS_RDS_BACKING
                  opt-in (see back_rds_with_local_postgres): a libpq connection string or
                  postgresql:// URL of a superuser on a local PostgreSQL cluster; every RDS
                  PostgreSQL primary created also gets its master user and database there.
                  libpq's PG* variables (PGPASSWORD, PGSSLROOTCERT, ...) apply to it.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import urllib.parse
import sys
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

WRITTEN_FOR_MOTO = "5.2.5"

# moto reads MOTO_AMIS_PATH when moto.ec2 is first imported, so it must be set before any import.
os.environ.setdefault("MOTO_AMIS_PATH", str(Path(__file__).resolve().with_name("amis.json")))

import moto  # noqa: E402
from botocore.auth import S3SigV4QueryAuth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from moto.core import responses as core_responses  # noqa: E402
from moto.iam import access_control  # noqa: E402
from moto.moto_server import werkzeug_app  # noqa: E402
from moto.rds import exceptions as rds_exceptions  # noqa: E402
from moto.rds import models as rds_models  # noqa: E402
from moto.rds import responses as rds_responses  # noqa: E402


def _require(owner: object, name: str) -> object:
    """The attribute a fix replaces; exits with a clear message when moto no longer has it."""
    try:
        return getattr(owner, name)
    except AttributeError:
        where = f"{getattr(owner, '__name__', owner)}.{name}"
        sys.exit(
            f"moto_server.py: moto {moto.__version__} has no {where}; the fix for it was "
            f"written for moto {WRITTEN_FOR_MOTO}: review localstack/moto_server.py"
        )


def fix_cross_region_replica_removal() -> None:
    """Deleting a cross-region read replica answered HTTP 500 (moto 5.2.5).

    A primary records a same-region replica by identifier but a cross-region one by ARN, while
    removal always looked the replica up by identifier, so `list.remove` raised ValueError after
    the replica had already been dropped from its region. Remove whichever form was recorded.
    """
    _require(rds_models.DBInstance, "remove_replica")

    def remove_replica(self: rds_models.DBInstance, replica: rds_models.DBInstance) -> None:
        for recorded in (replica.db_instance_identifier, replica.db_instance_arn):
            if recorded in self.replicas:
                self.replicas.remove(recorded)
                return

    rds_models.DBInstance.remove_replica = remove_replica


def fix_query_body_signature_encoding() -> None:
    """With IAM enforcement on, signed form-encoded requests failed when a value held a space.

    For the query protocol (EC2, RDS, IAM, STS) moto rebuilds the request body from the parsed
    form to recompute the SigV4 signature, and re-encodes it the way botocore does (space as
    `+`). The AWS SDK for Rust, like AWS itself accepts, encodes a space as `%20`, so the body
    moto signs differs from the one the client signed and moto answered AuthFailure /
    SignatureDoesNotMatch (moto 5.2.5). When the first check fails and the body was rebuilt from
    the form, check once more with RFC 3986 encoding (`%20`); a wrong key or secret still fails.
    """
    base = access_control.IAMRequestBase
    original = _require(base, "check_signature")
    _require(base, "_calculate_signature")

    def check_signature(self: access_control.IAMRequestBase) -> None:
        try:
            original(self)
        except Exception:
            if self._body or not isinstance(self._data, dict) or not self._data:
                raise
            if not self._headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256"):
                raise
            sent = self._get_string_between("Signature=", ",", self._headers["Authorization"])
            saved = self._body
            self._body = urlencode(self._data, doseq=True, quote_via=quote)
            try:
                matches = self._calculate_signature() == sent
            finally:
                self._body = saved
            if not matches:
                raise

    base.check_signature = check_signature


def fix_presigned_urls_under_enforcement() -> None:
    """With IAM enforcement on, every presigned S3 URL answered HTTP 500 (moto 5.2.5).

    moto's access check reads the credential from the Authorization header, which a presigned
    URL does not have (it carries X-Amz-Credential, X-Amz-Signature, ... in its query), and
    failed with KeyError. Take the credential from the query instead, then check what AWS checks:
    the URL has not expired, its SigV4 query signature is right for that key's secret, and the
    signer's policies allow the action. Without enforcement moto checks none of this (unchanged).
    """
    base = access_control.IAMRequestBase
    original_init = _require(base, "__init__")
    # Applied after fix_query_body_signature_encoding, so this wraps that wrapper.
    original_check = _require(base, "check_signature")
    _require(base, "_create_headers_for_aws_request")

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self._presigned = None
        headers = kwargs.get("headers")
        path = kwargs.get("path") or ""
        if headers is not None and "Authorization" not in headers:
            query = dict(parse_qsl(urlsplit(path).query, keep_blank_values=True))
            if query.get("X-Amz-Algorithm") == "AWS4-HMAC-SHA256" and "X-Amz-Credential" in query:
                self._presigned = query
                synthesized = dict(headers.items())
                synthesized["Authorization"] = (
                    f"AWS4-HMAC-SHA256 Credential={query['X-Amz-Credential']}, "
                    f"SignedHeaders={query.get('X-Amz-SignedHeaders', 'host')}, "
                    f"Signature={query.get('X-Amz-Signature', '')}"
                )
                if "X-Amz-Security-Token" in query:
                    synthesized["X-Amz-Security-Token"] = query["X-Amz-Security-Token"]
                kwargs["headers"] = synthesized
        original_init(self, *args, **kwargs)

    def check_signature(self) -> None:  # type: ignore[no-untyped-def]
        query = self._presigned
        if query is None:
            return original_check(self)
        try:
            signed_at = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
            lifetime = int(query.get("X-Amz-Expires", "604800"))
        except (KeyError, ValueError):
            self._raise_signature_does_not_match()
        if datetime.now(timezone.utc) > signed_at.replace(tzinfo=timezone.utc) + timedelta(
            seconds=lifetime
        ):
            self._raise_access_denied()
        # The canonical query string is the URL's own (still percent-encoded) one, less the
        # signature itself.
        path, _, raw_query = self._path.partition("?")
        unsigned = "&".join(
            pair for pair in raw_query.split("&") if not pair.startswith("X-Amz-Signature=")
        )
        signed_headers = query.get("X-Amz-SignedHeaders", "host").split(";")
        request = AWSRequest(
            method=self._method,
            url=f"{path}?{unsigned}",
            headers=self._create_headers_for_aws_request(signed_headers, self._headers),
        )
        request.context["timestamp"] = query["X-Amz-Date"]
        auth = S3SigV4QueryAuth(
            self._access_key.create_credentials(), self._service, self._region, expires=lifetime
        )
        string_to_sign = auth.string_to_sign(request, auth.canonical_request(request))
        if auth.signature(string_to_sign, request) != query.get("X-Amz-Signature"):
            self._raise_signature_does_not_match()

    base.__init__ = __init__
    base.check_signature = check_signature


FORM = "application/x-www-form-urlencoded"
ORIGINAL_CONTENT_TYPE = "heroku2rds.original_content_type"


def fix_form_typed_object_uploads() -> None:
    """An S3 PUT sent with a form content type lost its body (moto 5.2.5).

    `curl --data-binary @file URL` and Python's urllib label a body
    application/x-www-form-urlencoded. moto (and the web framework under it) parse such bodies as
    a form, so the object's bytes were consumed and an empty object stored with a 200; a body
    that is not UTF-8 made the request hang instead. AWS stores the bytes whatever the label.
    No AWS API takes a form in a PUT, so hide the label while the body is read and put it back
    before the handler runs (the object keeps its Content-Type; a signed content-type matches).
    """
    app = werkzeug_app.DomainDispatcherApplication
    original_call = _require(app, "__call__")
    base = core_responses.BaseResponse
    original_setup = _require(base, "setup_class")

    def __call__(self, environ, start_response):  # type: ignore[no-untyped-def]
        content_type = environ.get("CONTENT_TYPE", "")
        if environ.get("REQUEST_METHOD") == "PUT" and content_type.lower().startswith(FORM):
            environ[ORIGINAL_CONTENT_TYPE] = content_type
            environ["CONTENT_TYPE"] = "application/octet-stream"
        return original_call(self, environ, start_response)

    def setup_class(self, request, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return original_setup(self, request, *args, **kwargs)
        finally:
            if ORIGINAL_CONTENT_TYPE in request.environ:
                request.environ["CONTENT_TYPE"] = request.environ.pop(ORIGINAL_CONTENT_TYPE)

    app.__call__ = __call__
    base.setup_class = setup_class


# Order matters: fix_presigned_urls_under_enforcement wraps the check the one before it installs.
def fix_no_default_vpc() -> None:
    """Without a default VPC, moto created security groups and RDS instances anyway (moto 5.2.5).

    Accounts set up by Control Tower or a landing zone often have no default VPC. AWS then refuses
    CreateSecurityGroup without VpcId (`VPCIdNotSpecified`) and CreateDBInstance /
    CreateDBInstanceReadReplica without a DB subnet group (`InvalidVPCNetworkStateFault`), while
    moto placed the group in a stale default VPC and answered the RDS call with HTTP 500. Refuse
    both as AWS does when the region has no default VPC.
    """
    from moto.ec2.exceptions import VPCIdNotSpecifiedError
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.security_groups import SecurityGroupBackend
    from moto.rds.exceptions import RDSClientError

    original_group = _require(SecurityGroupBackend, "create_security_group")

    def create_security_group(self, name, description, vpc_id=None, *args, **kwargs):  # type: ignore[no-untyped-def]
        if vpc_id is None and self.get_default_vpc() is None:
            raise VPCIdNotSpecifiedError()
        return original_group(self, name, description, vpc_id, *args, **kwargs)

    SecurityGroupBackend.create_security_group = create_security_group

    def refuse_without_default_vpc(name: str) -> None:
        original = _require(rds_models.RDSBackend, name)

        def create(self, db_kwargs, *args, **kwargs):  # type: ignore[no-untyped-def]
            ec2 = ec2_backends[self.account_id][self.region_name]
            if not db_kwargs.get("db_subnet_group_name") and ec2.get_default_vpc() is None:
                raise RDSClientError(
                    "InvalidVPCNetworkStateFault",
                    "There is no default VPC in this region: specify a DBSubnetGroupName.",
                )
            return original(self, db_kwargs, *args, **kwargs)

        setattr(rds_models.RDSBackend, name, create)

    refuse_without_default_vpc("create_db_instance")
    refuse_without_default_vpc("create_db_instance_read_replica")


# A sample of RDS for PostgreSQL's catalogue: families and sizes heroku2rds's defaults and
# fallbacks use, one minor per major. Not AWS's real catalogue (which differs by region).
ORDERABLE_FAMILIES = ["m7g", "m6g", "m6i", "m5", "r7g", "r6g", "t4g"]
ORDERABLE_SIZES = ["micro", "small", "medium", "large", "xlarge", "2xlarge", "4xlarge", "8xlarge"]
ORDERABLE_MINORS = {"13": "13.20", "14": "14.17", "15": "15.12", "16": "16.8", "17": "17.4"}


def fix_postgres_orderable_options() -> None:
    """DescribeOrderableDBInstanceOptions answered nothing for PostgreSQL (moto 5.2.5).

    moto implements it for aurora-postgresql and neptune only, so every PostgreSQL class looked
    unavailable everywhere. For engine postgres, answer from the sample above, filtered by
    DBInstanceClass and EngineVersion as AWS filters, 100 per page with a Marker.
    """
    original = _require(rds_responses.RDSResponse, "describe_orderable_db_instance_options")

    def describe(self):  # type: ignore[no-untyped-def]
        if self.params.get("Engine") != "postgres":
            return original(self)
        want_class = self.params.get("DBInstanceClass")
        want_version = self.params.get("EngineVersion")
        options = []
        for family in ORDERABLE_FAMILIES:
            for size in ORDERABLE_SIZES:
                if family == "t4g" and size not in ("micro", "small", "medium", "large", "xlarge", "2xlarge"):
                    continue
                if family != "t4g" and size in ("micro", "small", "medium"):
                    continue
                cls = f"db.{family}.{size}"
                if want_class and want_class != cls:
                    continue
                for minor in ORDERABLE_MINORS.values():
                    if want_version and want_version != minor:
                        continue
                    options.append(
                        {
                            "Engine": "postgres",
                            "EngineVersion": minor,
                            "DBInstanceClass": cls,
                            "LicenseModel": "postgresql-license",
                            "StorageType": "gp3",
                            "MultiAZCapable": True,
                            "ReadReplicaCapable": True,
                            "Vpc": True,
                            "SupportsStorageEncryption": True,
                            "SupportsStorageAutoscaling": True,
                        }
                    )
        start = int(self.params.get("Marker") or 0)
        page = options[start : start + 100]
        result = {"OrderableDBInstanceOptions": page}
        if start + 100 < len(options):
            result["Marker"] = str(start + 100)
        return rds_responses.ActionResult(result)

    rds_responses.RDSResponse.describe_orderable_db_instance_options = describe


FIXES = [
    fix_no_default_vpc,
    fix_postgres_orderable_options,
    fix_cross_region_replica_removal,
    fix_query_body_signature_encoding,
    fix_presigned_urls_under_enforcement,
    fix_form_typed_object_uploads,
]


# --- Features: opt-in behaviour moto does not have (each a no-op unless enabled) ------------

RDS_BACKING_ENV = "HEROKU2RDS_RDS_BACKING"

# Run by psql with the variables master, database and verifier (-v NAME=VALUE) and used only as
# :"master" / :'verifier' (quoted by psql), so no value can change the SQL. \gset turns the one
# row of facts into variables for the \if blocks.
RDS_BACKING_SQL = r"""
SET client_min_messages = warning;
SELECT
  EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = :'master') AS role_exists,
  EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = :'master' AND rolsuper)
    AS role_is_superuser,
  EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = :'database') AS database_exists,
  current_setting('server_version_num')::int >= 150000 AS has_parameter_grants
\gset
\if :role_is_superuser
DO $$ BEGIN RAISE EXCEPTION 'the master user is a superuser on the backing cluster '
  '(RDS never makes one): choose another MasterUsername'; END $$;
\endif
\if :role_exists
ALTER ROLE :"master" WITH LOGIN CREATEDB CREATEROLE PASSWORD :'verifier';
\else
CREATE ROLE :"master" WITH LOGIN CREATEDB CREATEROLE PASSWORD :'verifier';
\endif
GRANT pg_signal_backend TO :"master";
\if :has_parameter_grants
GRANT SET ON PARAMETER session_replication_role TO :"master";
\endif
\if :database_exists
\else
CREATE DATABASE :"database" OWNER :"master";
\endif
"""


class RDSBackingError(rds_exceptions.RDSClientError):
    """CreateDBInstance failed because the backing PostgreSQL cluster refused the master user or
    database (HTTP 400, so SDKs report it at once instead of retrying)."""

    def __init__(self, message: str) -> None:
        super().__init__("LocalPostgresBackingFailed", message)


def scram_sha256_verifier(password: str, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password`, as psql's password command
    computes it.

    The cluster gets this instead of the password, so the password itself is never on psql's
    command line, in the SQL the server may log, or in an error message. PostgreSQL SASLprep's
    the password first, which leaves printable ASCII unchanged; RDS passwords are printable
    ASCII, and other passwords are refused before this is called.
    """
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _without_password(conninfo: str) -> tuple[str, str | None]:
    """Splits the password out of a URL or key=value connection string, so that it can travel
    in PGPASSWORD instead of psql's command line (visible to every user in the process list)."""
    if "://" in conninfo:
        u = urllib.parse.urlsplit(conninfo)
        if u.password is None:
            return conninfo, None
        host = u.netloc.rpartition("@")[2]
        user = urllib.parse.quote(urllib.parse.unquote(u.username or ""), safe="")
        netloc = f"{user}@{host}" if user else host
        return urllib.parse.urlunsplit(u._replace(netloc=netloc)), urllib.parse.unquote(u.password)
    found = re.search(r"(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", conninfo)
    if not found:
        return conninfo, None
    value = found.group(1)
    if value.startswith("'"):
        value = re.sub(r"\\(.)", r"\1", value[1:-1])
    return (conninfo[: found.start()] + " " + conninfo[found.end():]).strip(), value


def _psql_on_backing(conninfo: str, script: str, variables: dict[str, str]) -> None:
    """Runs `script` with psql on the backing cluster; raises RDSBackingError with psql's
    message (terse: without the echo of the failing statement) when it fails."""
    command = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=terse"]
    for name, value in variables.items():
        command += ["-v", f"{name}={value}"]
    conninfo, password = _without_password(conninfo)
    command += ["-d", conninfo]
    env = {**os.environ, "PGAPPNAME": "heroku2rds moto RDS backing"}
    if password is not None:
        env["PGPASSWORD"] = password
    env.setdefault("PGCONNECT_TIMEOUT", "10")
    try:
        done = subprocess.run(
            command, input=script, text=True, capture_output=True, env=env, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RDSBackingError(f"{RDS_BACKING_ENV}: psql failed: {type(error).__name__}") from None
    if done.returncode != 0:
        detail = " ".join(done.stderr.split()) or f"psql exited with status {done.returncode}"
        raise RDSBackingError(f"{RDS_BACKING_ENV}: the local PostgreSQL cluster refused: {detail}")


def back_rds_with_local_postgres() -> None:
    """Gives every RDS PostgreSQL primary a real database: the master user and database are made
    on a local PostgreSQL cluster too (opt-in; a no-op unless HEROKU2RDS_RDS_BACKING is set).

    moto's RDS instances are records with a fake endpoint and nothing behind it. With
    HEROKU2RDS_RDS_BACKING set to a superuser's connection string on a local cluster, each
    successful CreateDBInstance of a `postgres` primary (not a read replica, not an Aurora
    cluster member) also does there what RDS does on the new server: the role MasterUsername
    with LOGIN, CREATEDB, CREATEROLE and MasterUserPassword (ALTER ROLE if it exists: the latest
    CreateDBInstance sets the password), membership in pg_signal_backend, SET on
    session_replication_role (PostgreSQL 15+), and the database DBName (default `postgres`)
    owned by it unless a database of that name exists. With ManageMasterUserPassword the
    password is the one in the instance's managed secret. If the cluster refuses, the instance
    is removed again and CreateDBInstance fails with LocalPostgresBackingFailed and psql's
    message. The endpoint stays moto's fake host name: clients reach the cluster by mapping it.
    """
    conninfo = os.environ.get(RDS_BACKING_ENV, "").strip()
    if not conninfo:
        return
    if shutil.which("psql") is None:
        sys.exit(
            f"moto_server.py: {RDS_BACKING_ENV} is set but psql is not on PATH "
            "(apt-get install postgresql-client)"
        )
    response = rds_responses.RDSResponse
    original_create = _require(response, "create_db_instance")
    _require(rds_models.RDSBackend, "delete_db_instance")

    def master_password(database: rds_models.DBInstance, params: dict) -> str:
        if params.get("manage_master_user_password"):
            secret = database.master_user_secret.secret.secret_string
            return json.loads(secret)["password"]
        return params.get("master_user_password") or ""

    def back(database: rds_models.DBInstance, params: dict) -> None:
        master = params.get("master_username") or ""
        password = master_password(database, params)
        db_name = params.get("db_name") or "postgres"
        if not master:
            raise RDSBackingError(f"{RDS_BACKING_ENV}: MasterUsername is required")
        if not re.fullmatch(r"[\x20-\x7e]{8,}", password):
            raise RDSBackingError(
                f"{RDS_BACKING_ENV}: MasterUserPassword must be at least 8 printable ASCII "
                "characters"
            )
        variables = {
            "master": master,
            "database": db_name,
            "verifier": scram_sha256_verifier(password),
        }
        _psql_on_backing(conninfo, RDS_BACKING_SQL, variables)
        print(
            f"{RDS_BACKING_ENV}: RDS instance {database.db_instance_identifier}: master user "
            f"{master!r} and database {db_name!r} made on the local cluster",
            file=sys.stderr,
            flush=True,
        )

    def create_db_instance(self):  # type: ignore[no-untyped-def]
        result = original_create(self)
        params = self.params
        database = self.backend.databases.get(params.get("db_instance_identifier"))
        if (
            database is None
            or database.engine != "postgres"
            or getattr(database, "db_cluster_identifier", None)
        ):
            return result
        try:
            back(database, params)
        except RDSBackingError:
            # Undo the instance, as if CreateDBInstance had failed (deletion protection aside).
            database.deletion_protection = False
            self.backend.delete_db_instance(
                database.db_instance_identifier, skip_final_snapshot=True
            )
            raise
        return result

    response.create_db_instance = create_db_instance
    # moto warns that the code is not one of RDS's error shapes; it is meant not to be.
    warnings.filterwarnings("ignore", message=r"Exception\(RDSBackingError\)")
    print(
        f"{RDS_BACKING_ENV} is set: RDS PostgreSQL primaries get their master user and database "
        "on that local cluster",
        file=sys.stderr,
        flush=True,
    )


# Applied after the fixes, always; each does nothing unless its environment variable is set.
FEATURES = [back_rds_with_local_postgres]


def write_pid_file(path: str) -> None:
    pid = str(os.getpid())
    Path(path).write_text(pid + "\n")

    def remove() -> None:
        try:
            if Path(path).read_text().strip() == pid:
                os.unlink(path)
        except OSError:
            pass

    atexit.register(remove)


def main() -> None:
    if pid_file := os.environ.get("HEROKU2RDS_MOTO_PID_FILE"):
        write_pid_file(pid_file)
    if moto.__version__ != WRITTEN_FOR_MOTO:
        print(
            f"moto_server.py: running moto {moto.__version__}; the fixes here were written for "
            f"{WRITTEN_FOR_MOTO}",
            file=sys.stderr,
        )
    skip = {name.strip() for name in os.environ.get("HEROKU2RDS_MOTO_SKIP_FIXES", "").split(",")}
    applied = [fix for fix in FIXES if "all" not in skip and fix.__name__ not in skip]
    for fix in applied:
        fix()
    for feature in FEATURES:
        feature()
    print(
        f"moto {moto.__version__} with fixes: {', '.join(f.__name__ for f in applied) or 'none'}; "
        f"AMIs from {os.environ['MOTO_AMIS_PATH']}",
        file=sys.stderr,
        flush=True,
    )
    from moto.server import main as moto_main

    moto_main(sys.argv[1:])


if __name__ == "__main__":
    main()
