"""Checks of the two stand-ins: RDS backed by a local PostgreSQL cluster, and the EC2 worker.

Run by localstack/smoke-standins with the moto venv's Python, which starts what this needs and
passes it in:
  --plain URL          a moto server started without HEROKU2RDS_RDS_BACKING
  --backed URL         a moto server started with it (omitted: the backing checks are skipped)
  --backed-log FILE    that server's log (checked for passwords)
  --pg-port PORT       the backing cluster (TLS on 127.0.0.1; superuser `postgres` whose
                       password is in PGPASSWORD)
Prints one line per check and `N passed, N failed, N skipped`; exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import ec2_worker_standin  # noqa: E402

REGION = "us-east-2"
RUN = secrets.token_hex(3)
TAG_KEY = "heroku2rds:migration"
HTTP_TIMEOUT = 30
BACKING_ENV = "HEROKU2RDS_RDS_BACKING"

passed: list[str] = []
failed: list[str] = []
skipped: list[str] = []


class Skip(Exception):
    pass


def check(name: str, fn: Callable[[], str | None]) -> bool:
    """Runs one check; prints `ok`, `FAIL` or `skip` with a detail line."""
    try:
        detail = fn()
    except Skip as skip:
        skipped.append(name)
        print(f"skip  {name}: {skip}", flush=True)
        return True
    except Exception as error:  # noqa: BLE001 - every failure is reported
        failed.append(name)
        print(f"FAIL  {name}: {type(error).__name__}: {error}", flush=True)
        traceback.print_exc(file=sys.stderr)
        return False
    passed.append(name)
    print(f"ok    {name}" + (f": {detail}" if detail else ""), flush=True)
    return True


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def wait_for(what: str, condition: Callable[[], Any], timeout: float = 15) -> Any:
    """Polls `condition` until it is truthy; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


def client(service: str, endpoint: str) -> Any:
    config = Config(
        connect_timeout=5,
        read_timeout=HTTP_TIMEOUT,
        retries={"total_max_attempts": 1},
        s3={"addressing_style": "path"},
    )
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=config,
    )


# --- RDS backed by a local PostgreSQL cluster ------------------------------------------------


class Backing:
    """The backed and plain emulators and the cluster behind the backed one."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.passwords: list[str] = []

    def require(self) -> None:
        if not self.args.backed:
            raise Skip("no PostgreSQL cluster (server binaries or psql missing)")

    def psql(self, user: str, password: str, dbname: str, sql: str) -> subprocess.CompletedProcess:
        """Runs `sql` on the backing cluster as `user` (TLS, password authentication)."""
        conninfo = (
            f"host=127.0.0.1 port={self.args.pg_port} sslmode=require "
            f"user='{libpq_quote(user)}' dbname='{libpq_quote(dbname)}'"
        )
        return subprocess.run(
            ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", sql],
            capture_output=True,
            text=True,
            env={**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"},
            timeout=30,
        )

    def superuser(self, sql: str) -> str:
        done = self.psql("postgres", os.environ["PGPASSWORD"], "postgres", sql)
        expect(done.returncode == 0, f"superuser query failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def create(self, endpoint: str, ident: str, user: str, password: str, db: str | None) -> Any:
        self.passwords.append(password)
        kwargs: dict[str, Any] = {
            "DBInstanceIdentifier": ident,
            "DBInstanceClass": "db.t4g.micro",
            "Engine": "postgres",
            "EngineVersion": "16.4",
            "AllocatedStorage": 20,
            "StorageType": "gp3",
            "MasterUsername": user,
            "MasterUserPassword": password,
            "DeletionProtection": True,
            "Tags": [{"Key": TAG_KEY, "Value": f"h2r-standins-{RUN}"}],
        }
        if db:
            kwargs["DBName"] = db
        return client("rds", endpoint).create_db_instance(**kwargs)["DBInstance"]

    def facts(self, user: str, password: str, db: str) -> dict[str, str]:
        """What the master user sees when it logs in with `password`."""
        done = self.psql(
            user,
            password,
            db,
            "SET session_replication_role = replica; "
            "SELECT json_build_object("
            "'user', current_user, 'db', current_database(), "
            "'owner', (SELECT pg_get_userbyid(datdba) FROM pg_database "
            "          WHERE datname = current_database()), "
            "'super', (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), "
            "'createdb', (SELECT rolcreatedb FROM pg_roles WHERE rolname = current_user), "
            "'createrole', (SELECT rolcreaterole FROM pg_roles WHERE rolname = current_user), "
            "'signal', pg_has_role('pg_signal_backend', 'MEMBER'), "
            "'srr', current_setting('session_replication_role'))",
        )
        expect(done.returncode == 0, f"login as {user!r} failed: {done.stderr.strip()}")
        return json.loads(done.stdout)

    def creates_role_and_database(self) -> str:
        self.require()
        user, db = f"app_{RUN}", f"appdb_{RUN}"
        # Every character psql or SQL would treat specially, in an RDS-valid password.
        password = f"pw'\"\\;:x$1 --{RUN}"
        instance = self.create(self.args.backed, f"h2r-standins-{RUN}-a", user, password, db)
        endpoint = instance["Endpoint"]
        expect(
            endpoint
            == {
                "Address": f"{instance['DBInstanceIdentifier']}.aaaaaaaaaa.{REGION}"
                ".rds.amazonaws.com",
                "Port": 5432,
            },
            f"the endpoint changed: {endpoint}",
        )
        got = self.facts(user, password, db)
        want = {
            "user": user,
            "db": db,
            "owner": user,
            "super": False,
            "createdb": True,
            "createrole": True,
            "signal": True,
            "srr": "replica",
        }
        expect(got == want, f"got {got}, want {want}")
        return f"{user} logs in to {db}, owns it, may set session_replication_role"

    def same_user_again(self) -> str:
        self.require()
        user, db = f"app_{RUN}", f"appdb_{RUN}"
        password = f"second-{RUN}-password"
        self.create(self.args.backed, f"h2r-standins-{RUN}-b", user, password, db)
        got = self.facts(user, password, db)
        expect(got["owner"] == user, str(got))
        old = self.psql(user, self.passwords[0], db, "SELECT 1")
        expect(old.returncode != 0, "the first password still works")
        # No DBName: the default database `postgres` exists and keeps its owner.
        self.create(self.args.backed, f"h2r-standins-{RUN}-c", user, password, None)
        owner = self.superuser(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'postgres'"
        )
        expect(owner == "postgres", f"postgres is now owned by {owner}")
        return "second instance: password changed, database kept; no DBName: postgres untouched"

    def refusal_fails_the_call(self) -> str:
        self.require()
        rds = client("rds", self.args.backed)
        ident = f"h2r-standins-{RUN}-bad"
        try:
            self.create(self.args.backed, ident, "postgres", f"pw-{RUN}-superuser", None)
        except ClientError as error:
            code = error.response["Error"]["Code"]
            message = error.response["Error"]["Message"]
            expect(code == "LocalPostgresBackingFailed", f"code {code}")
            expect("superuser" in message, message)
        else:
            raise AssertionError("CreateDBInstance succeeded for the cluster's superuser")
        try:
            rds.describe_db_instances(DBInstanceIdentifier=ident)
        except ClientError as error:
            expect(error.response["Error"]["Code"] == "DBInstanceNotFound", str(error))
        else:
            raise AssertionError("the refused instance exists")
        return f"LocalPostgresBackingFailed: {message}"

    def replica_not_backed(self) -> str:
        self.require()
        rds = client("rds", self.args.backed)
        replica = rds.create_db_instance_read_replica(
            DBInstanceIdentifier=f"h2r-standins-{RUN}-rr",
            SourceDBInstanceIdentifier=f"h2r-standins-{RUN}-a",
            DBInstanceClass="db.t4g.micro",
        )["DBInstance"]
        return f"{replica['DBInstanceIdentifier']} created"

    def no_passwords_in_log(self) -> str:
        self.require()
        log = Path(self.args.backed_log).read_text(errors="replace")
        for password in self.passwords:
            expect(password not in log, "a master password is in the emulator's log")
        expect("made on the local cluster" in log, "no backing line in the log")
        return f"{len(self.passwords)} passwords absent from {Path(self.args.backed_log).name}"

    def nothing_without_the_variable(self) -> str:
        self.require()
        user = f"plain_{RUN}"
        self.create(self.args.plain, f"h2r-standins-{RUN}-plain", user, f"pw-{RUN}-plain", None)
        roles = self.superuser(f"SELECT count(*) FROM pg_roles WHERE rolname = '{user}'")
        expect(roles == "0", f"the role {user} was made without {BACKING_ENV}")
        log = Path(self.args.plain_log).read_text(errors="replace")
        expect(BACKING_ENV not in log, f"the plain server's log mentions {BACKING_ENV}")
        return "CreateDBInstance succeeded, no role on the cluster, nothing in the log"

    def clean_up(self) -> str:
        self.require()
        rds = client("rds", self.args.backed)
        for suffix in ("rr", "a", "b", "c"):
            ident = f"h2r-standins-{RUN}-{suffix}"
            with contextlib.suppress(ClientError):
                rds.modify_db_instance(DBInstanceIdentifier=ident, DeletionProtection=False)
                rds.delete_db_instance(DBInstanceIdentifier=ident, SkipFinalSnapshot=True)
        return None


def libpq_quote(value: str) -> str:
    """A value for a single-quoted libpq conninfo field."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


# --- The EC2 worker stand-in -----------------------------------------------------------------

# The worker binary the stand-in downloads: records how it was started, then does what its job
# says (`action=exit:N` or `action=sleep`). The job also holds a fake secret that must never
# appear in the stand-in's output.
FAKE_BINARY = r"""#!/bin/sh
job=$3
record=$(sed -n 's/^record=//p' "$job")
action=$(sed -n 's/^action=//p' "$job")
{
  echo "start pid=$$"
  echo "argv=$*"
  echo "creds=$CREDENTIALS_DIRECTORY"
  echo "credsmode=$(stat -c %a "$CREDENTIALS_DIRECTORY")"
  echo "jobmode=$(stat -c %a "$job")"
  echo "stdin=$(readlink /proc/$$/fd/0)"
} >>"$record"
echo "fake worker output"
case $action in
  exit:*) exit "${action#exit:}" ;;
  sleep)
    trap 'echo "term pid=$$" >>"$record"; exit 0' TERM
    sleep 300 &
    echo "child=$!" >>"$record"
    wait $!
    ;;
esac
"""


def sh_quote(value: str) -> str:
    """Single-quotes for bash, as heroku2rds's user-data does."""
    return "'" + value.replace("'", "'\\''") + "'"


def user_data(binary_url: str, sha: str, job_url: str) -> str:
    """A script with the lines heroku2rds's user-data has (the rest is not read)."""
    return (
        "#!/bin/bash\nset -euo pipefail\nreadonly PG_MAJOR=16\n"
        f"readonly BINARY_URL={sh_quote(binary_url)}\n"
        f"readonly BINARY_SHA256={sh_quote(sha)}\n"
        f"readonly JOB_URL={sh_quote(job_url)}\n"
        "readonly RDS_CA_URL='https://example.invalid/ca.pem'\n"
        "echo the rest of the bootstrap\n"
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


class Workers:
    """One stand-in watching migration h2r-standins-RUN on the plain emulator."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.endpoint = args.plain
        self.migration = f"h2r-standins-{RUN}"
        self.bucket = f"h2r-standins-{RUN}"
        self.tmp = Path(tempfile.mkdtemp(prefix="h2r-standins-"))
        self.state_dir = self.tmp / "state"
        self.events_path = self.tmp / "events"
        self.pid_file = self.tmp / "standin.pid"
        self.secret = f"hunter2-{RUN}"
        self.process: subprocess.Popen | None = None
        self.instances: dict[str, str] = {}  # name -> instance id
        self.ec2 = client("ec2", self.endpoint)
        self.s3 = client("s3", self.endpoint)
        self.binary_sha = hashlib.sha256(FAKE_BINARY.encode()).hexdigest()

    def record(self, name: str) -> Path:
        return self.tmp / f"{name}.record"

    def events(self) -> str:
        return self.events_path.read_text() if self.events_path.exists() else ""

    def presign(self, key: str) -> str:
        return self.s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=600
        )

    def launch(self, name: str, action: str, sha: str | None = None) -> str:
        """Puts a job for `name` in the bucket and runs an instance whose user-data points at
        it; returns the instance id."""
        job = f"record={self.record(name)}\naction={action}\nsecret={self.secret}\n"
        key = f"jobs/{name}/job's.json"  # a quote in the key, percent-encoded in the URL
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=job.encode())
        script = user_data(
            self.presign("jobs/heroku2rds"), sha or self.binary_sha, self.presign(key)
        )
        image = self.ec2.describe_images(Owners=["099720109477"])["Images"][0]["ImageId"]
        instance = self.ec2.run_instances(
            ImageId=image,
            MinCount=1,
            MaxCount=1,
            InstanceType="t3.micro",
            UserData=script,  # boto3 base64-encodes it, as heroku2rds does itself
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": TAG_KEY, "Value": self.migration}]}
            ],
        )["Instances"][0]["InstanceId"]
        self.instances[name] = instance
        return instance

    def runs(self, name: str) -> list[dict[str, str]]:
        """The starts the fake binary recorded for `name`, one dict per start."""
        path = self.record(name)
        if not path.exists():
            return []
        starts: list[dict[str, str]] = []
        for line in path.read_text().splitlines():
            if line.startswith("start "):
                starts.append({"pid": line.split("=", 1)[1]})
            elif starts and "=" in line:
                key, _, value = line.partition("=")
                if key.startswith("term pid"):
                    starts[-1]["term"] = "yes"
                else:
                    starts[-1][key] = value
        return starts

    # --- checks ------------------------------------------------------------------------------

    def setup(self) -> str:
        self.s3.create_bucket(
            Bucket=self.bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        self.s3.put_object(Bucket=self.bucket, Key="jobs/heroku2rds", Body=FAKE_BINARY.encode())
        for name, action in (
            ("restarts", "exit:1"),
            ("prevented", "exit:3"),
            ("sleeper", "sleep"),
            ("other", "sleep"),
        ):
            self.launch(name, action)
        self.launch("badsha", "exit:0", sha="0" * 64)
        env = {
            **os.environ,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": REGION,
        }
        with open(self.events_path, "wb") as events:
            self.process = subprocess.Popen(
                [
                    str(HERE / "ec2-worker-standin"),
                    "--migration",
                    self.migration,
                    "--state-dir",
                    str(self.state_dir),
                    "--pid-file",
                    str(self.pid_file),
                ],
                stdin=subprocess.DEVNULL,
                stdout=events,
                stderr=subprocess.STDOUT,
                env=env,
            )
        wait_for("the pid file", lambda: self.pid_file.exists())
        return (
            f"{len(self.instances)} instances of {self.migration}, stand-in pid {self.process.pid}"
        )

    def runs_the_worker(self) -> str:
        instance = self.instances["sleeper"]
        # The record is written line by line: wait for its last line.
        wait_for("the sleeper's start", lambda: "child" in (self.runs("sleeper") or [{}])[0])
        run = self.runs("sleeper")[0]
        creds = self.state_dir / instance / "credentials"
        expect(run["argv"] == f"worker --job {creds}/job", run["argv"])
        expect(run["creds"] == str(creds), run["creds"])
        expect(
            run["credsmode"] == "700" and run["jobmode"] == "600",
            f"modes {run['credsmode']}, {run['jobmode']}",
        )
        expect(run["stdin"] == "/dev/null", f"stdin {run['stdin']}")
        wait_for("the started event", lambda: f"worker {instance}: started pid" in self.events())
        log = (self.state_dir / f"{instance}.log").read_text()
        expect("fake worker output" in log, "the worker's output is not in its log")
        return f"{run['argv']}, credentials 700/600, output in {instance}.log"

    def restarts_on_failure(self) -> str:
        instance = self.instances["restarts"]
        wait_for("a restart after exit 1", lambda: len(self.runs("restarts")) >= 2, 10)
        expect(f"worker {instance}: exited 1, restarting in 2s" in self.events(), self.events())
        return f"started {len(self.runs('restarts'))} times so far"

    def no_restart_on_3(self) -> str:
        instance = self.instances["prevented"]
        wait_for(
            "the exit 3 event",
            lambda: f"worker {instance}: exited 3, not restarting" in self.events(),
        )
        time.sleep(2.5)  # longer than RestartSec
        expect(len(self.runs("prevented")) == 1, f"{len(self.runs('prevented'))} starts")
        return "one start only"

    def refuses_wrong_sha(self) -> str:
        instance = self.instances["badsha"]
        wait_for(
            "the SHA-256 refusal", lambda: f"worker {instance}: bootstrap failed" in self.events()
        )
        expect("does not match its SHA-256" in self.events(), self.events())
        expect(not self.runs("badsha"), "the binary ran")
        expect(not (self.state_dir / instance).exists(), "the refused binary was kept")
        return "bootstrap failed, nothing ran"

    def stop_and_start(self) -> str:
        instance = self.instances["sleeper"]
        wait_for("its child", lambda: "child" in self.runs("sleeper")[0])
        first = self.runs("sleeper")[0]
        self.ec2.stop_instances(InstanceIds=[instance])
        wait_for("the worker to stop", lambda: "term" in self.runs("sleeper")[0])
        expect(not pid_alive(int(first["pid"])), "the worker still runs")
        expect(not pid_alive(int(first["child"])), "the worker's child still runs")
        self.ec2.start_instances(InstanceIds=[instance])
        wait_for("the worker to run again", lambda: len(self.runs("sleeper")) == 2)
        return "stopped with the instance, started again with it"

    def terminate_stops(self) -> str:
        instance = self.instances["sleeper"]
        run = wait_for("the second run", lambda: self.runs("sleeper")[1:])[0]
        wait_for("its child", lambda: "child" in self.runs("sleeper")[1])
        run = self.runs("sleeper")[1]
        self.ec2.terminate_instances(InstanceIds=[instance])
        wait_for(
            "the terminated event",
            lambda: f"worker {instance}: instance terminated, stopped" in self.events(),
        )
        expect(self.runs("sleeper")[1].get("term") == "yes", "the worker got no SIGTERM")
        expect(not pid_alive(int(run["pid"])), "the worker still runs")
        expect(not pid_alive(int(run["child"])), "the worker's child still runs")
        wait_for("its directory to go", lambda: not (self.state_dir / instance).exists(), 5)
        return "SIGTERM to the worker and its child, job removed"

    def sigterm_stops_all(self) -> str:
        assert self.process is not None
        other = self.runs("other")[0]
        restarts = self.instances["restarts"]
        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(timeout=15)
        expect(status == 0, f"the stand-in exited {status}")
        expect(self.runs("other")[0].get("term") == "yes", "the other worker got no SIGTERM")
        expect(not pid_alive(int(other["pid"])), "the other worker still runs")
        expect(not self.pid_file.exists(), "the pid file is still there")
        expect(not (self.state_dir / restarts).exists(), "a job is left behind")
        return "exit 0, workers stopped, jobs and pid file removed"

    def no_secrets_printed(self) -> str:
        events = self.events()
        for leak in (self.secret, "X-Amz-Signature", "Signature=", self.endpoint + "/"):
            expect(leak not in events, f"the stand-in printed {leak!r}")
        return f"{len(events.splitlines())} event lines, no URL or job content"

    def clean_up(self) -> str:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        ids = list(self.instances.values())
        if ids:
            self.ec2.terminate_instances(InstanceIds=ids)
        with contextlib.suppress(ClientError):
            for obj in self.s3.list_objects_v2(Bucket=self.bucket).get("Contents", []):
                self.s3.delete_object(Bucket=self.bucket, Key=obj["Key"])
            self.s3.delete_bucket(Bucket=self.bucket)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return None


def parses_bash_quoting() -> str:
    url = "https://h.example/b/k?X-Amz-Signature=ab&x='quote'"
    parsed = ec2_worker_standin.parse_user_data(user_data(url, "A" * 64, url))
    expect(parsed.binary_url == url and parsed.job_url == url, str(parsed))
    expect(parsed.binary_sha256 == "a" * 64, parsed.binary_sha256)
    return "'...'\\''...' unquoted"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--plain", required=True)
    parser.add_argument("--plain-log", required=True)
    parser.add_argument("--backed")
    parser.add_argument("--backed-log")
    parser.add_argument("--pg-port")
    args = parser.parse_args()
    print(f"stand-in checks, run {RUN}", flush=True)

    backing = Backing(args)
    steps: list[tuple[str, Callable[[], str | None]]] = [
        ("rds backing: master role and database on the cluster", backing.creates_role_and_database),
        ("rds backing: same master user again", backing.same_user_again),
        ("rds backing: a refusal fails CreateDBInstance", backing.refusal_fails_the_call),
        ("rds backing: read replica untouched", backing.replica_not_backed),
        ("rds backing: no password in the log", backing.no_passwords_in_log),
        ("rds backing: nothing without the variable", backing.nothing_without_the_variable),
    ]
    for name, step in steps:
        check(name, step)
    check("rds backing: clean up", backing.clean_up)

    check("ec2 stand-in: user-data quoting", parses_bash_quoting)
    workers = Workers(args)
    try:
        if check("ec2 stand-in: start with five instances", workers.setup):
            for name, step in [
                ("ec2 stand-in: runs the worker as systemd would", workers.runs_the_worker),
                ("ec2 stand-in: restarts after exit 1", workers.restarts_on_failure),
                ("ec2 stand-in: no restart after exit 3", workers.no_restart_on_3),
                ("ec2 stand-in: refuses a wrong SHA-256", workers.refuses_wrong_sha),
                ("ec2 stand-in: StopInstances, StartInstances", workers.stop_and_start),
                ("ec2 stand-in: TerminateInstances stops the worker", workers.terminate_stops),
                ("ec2 stand-in: SIGTERM stops every worker", workers.sigterm_stops_all),
                ("ec2 stand-in: no URL or job content printed", workers.no_secrets_printed),
            ]:
                check(name, step)
    finally:
        if failed:
            print(f"stand-in events:\n{workers.events()[-4000:]}", file=sys.stderr)
        check("ec2 stand-in: clean up", workers.clean_up)
    print(f"{len(passed)} passed, {len(failed)} failed, {len(skipped)} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
