"""Play the EC2 worker instances of one heroku2rds migration on this machine.

Run by localstack/ec2-worker-standin with the moto venv's Python, beside the emulator that
`localstack/start` runs (AWS_ENDPOINT_URL etc. in the environment). In the emulator an instance
is only a record, so nothing would run the worker's user-data. This does, for the instances
tagged heroku2rds:migration=NAME, what the user-data and its systemd unit do on a real worker
(see src/aws/userdata.rs):

- bootstrap (once per instance, like cloud-init): read the user-data, take the BINARY_URL,
  BINARY_SHA256, JOB_URL and STATE_URL lines, download the job then the binary through their
  URLs (presigned by provision, or the operator's own binary URL from `--worker-binary-url`;
  first, as the script does; retried like `curl --retry 10 --retry-delay 5`), refuse a binary
  whose SHA-256 differs, and keep the job in a private directory (0700, file `job` 0600), as
  systemd's LoadCredential=; report each stage as the script does (fetching,
  binary-checksum-wrong or fetch-failed, installing-postgresql-client, starting-service,
  started) by PUTting {"state", "at", "detail"} to STATE_URL;
- run `BINARY worker --job DIR/job` with CREDENTIALS_DIRECTORY=DIR, stdin /dev/null, output
  appended to STATE_DIR/INSTANCE-ID.log, in its own process group (the unit's control group);
- Restart=on-failure with RestartSec=2 (10 on a real worker, shortened here) and
  RestartPreventExitStatus=2 3 4: no restart after exit 0, 2, 3 or 4, nor after death by
  SIGHUP, SIGINT, SIGTERM or SIGPIPE (systemd counts those as clean);
- instance stopping/stopped, shutting-down/terminated or gone: SIGTERM to the process group,
  SIGKILL after 10 s (systemd's default would wait 90 s). A stopped instance started again
  runs its worker again (the unit is enabled, the user-data does not run twice); a terminated
  one has its directory removed. SIGTERM or SIGINT to this program stops every worker so,
  removes their binaries and jobs (logs stay) and exits 0.

Not emulated: DynamicUser= (the worker runs as this program's user), the sandboxing options,
the PostgreSQL client install and apt (reported, not done), the RDS CA bundle download,
systemd's start rate limit. tests/container/ runs the real script under systemd instead.
The worker inherits this program's environment (so settings meant for it can be given here).
A changed source URL reaches the worker as on a real one: through the target database (see
src/aws/job.rs); the worker exits 5 while its source refuses it and is restarted here as systemd
would, each start looking for a newer URL first.
Never printed: the job's contents and the presigned URLs (their signatures open the objects).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import ctypes
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

TAG_KEY = "heroku2rds:migration"
POLL_SECONDS = 0.5
RESTART_SECONDS = 2.0
STOP_TIMEOUT_SECONDS = 10.0
NO_RESTART_STATUSES = {0, 2, 3, 4}  # success, and the unit's RestartPreventExitStatus=2 3 4
CLEAN_SIGNALS = {signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE}
FETCH_ATTEMPTS = 11  # curl --retry 10: the first try and ten more
FETCH_RETRY_SECONDS = 5.0
FETCH_TIMEOUT_SECONDS = 60
RUNNING_STATES = {"pending", "running"}
POWERED_OFF_STATES = {"stopping", "stopped"}
GONE_STATES = {"shutting-down", "terminated"}
USER_DATA_LINE = re.compile(
    r"^readonly (BINARY_URL|BINARY_SHA256|JOB_URL|STATE_URL)=(.*)$", re.MULTILINE
)


def say(message: str) -> None:
    """One event line on stderr."""
    print(f"ec2-worker-standin: {message}", file=sys.stderr, flush=True)


class BootstrapError(Exception):
    """The bootstrap failed; `final` when trying again cannot help (as the real script exits)."""

    def __init__(self, message: str, final: bool = False, reported: bool = False) -> None:
        super().__init__(message)
        self.final = final
        self.reported = reported  # its state was already reported


@dataclass(frozen=True)
class WorkerSource:
    """What the user-data says to fetch."""

    binary_url: str
    binary_sha256: str
    job_url: str
    state_url: str  # "" when the user-data reports nowhere


def bash_word(text: str) -> str:
    """The value of one bash word without expansions, e.g. 'it'\\''s' -> it's."""
    words = shlex.split(text, comments=False, posix=True)
    if len(words) != 1:
        raise ValueError("not a single word")
    return words[0]


def parse_user_data(script: str) -> WorkerSource:
    """Takes the three `readonly NAME='value'` lines heroku2rds writes into the user-data."""
    found: dict[str, str] = {}
    for name, raw in USER_DATA_LINE.findall(script):
        try:
            found[name] = bash_word(raw)
        except ValueError:
            raise BootstrapError(
                f"the user-data's {name} line is not one quoted word", True
            ) from None
    missing = [n for n in ("BINARY_URL", "BINARY_SHA256", "JOB_URL") if n not in found]
    if missing:
        raise BootstrapError(
            f"the user-data has no {', '.join(missing)} (not a heroku2rds worker?)", True
        )
    sha = found["BINARY_SHA256"].lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise BootstrapError("the user-data's BINARY_SHA256 is not a SHA-256", True)
    return WorkerSource(found["BINARY_URL"], sha, found["JOB_URL"], found.get("STATE_URL", ""))


def report(source: WorkerSource | None, state: str, detail: str) -> None:
    """PUTs the bootstrap state where the laptop reads it, as the script's `report` does; a
    failure is only said (never with the URL)."""
    if source is None or not source.state_url:
        return
    body = json.dumps({"state": state, "at": int(time.time()), "detail": detail}).encode()
    request = urllib.request.Request(
        source.state_url,
        data=body,
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_SECONDS):
            pass
    except (urllib.error.URLError, OSError) as error:
        say(f"could not report the bootstrap state {state} ({type(error).__name__})")


def fetch(url: str, what: str, dest: Path, mode: int) -> str:
    """Downloads `url` into a new file `dest` with `mode`; returns the SHA-256 of the bytes.

    Errors name `what`, never the URL (its query carries the signature).
    """
    if not url.startswith(("http://", "https://")):
        raise BootstrapError(f"the {what} URL is not http(s)", True)
    digest = hashlib.sha256()
    with contextlib.suppress(FileNotFoundError):
        dest.unlink()
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_SECONDS) as answer:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as out:
                while chunk := answer.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    except urllib.error.HTTPError as error:
        raise BootstrapError(f"downloading the {what}: HTTP {error.code}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", None) or getattr(error, "strerror", None)
        raise BootstrapError(f"downloading the {what}: {reason or type(error).__name__}") from None
    os.chmod(dest, mode)  # whatever the umask
    return digest.hexdigest()


def set_parent_death_signal() -> None:
    """In the child before exec: SIGTERM it if this program dies without stopping it (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


class Worker:
    """One instance's worker: its files, its process and its restart policy."""

    def __init__(self, instance_id: str, state_dir: Path, restart_seconds: float) -> None:
        self.id = instance_id
        self.home = state_dir / instance_id
        self.binary = self.home / "heroku2rds"
        self.credentials = self.home / "credentials"
        self.log_path = state_dir / f"{instance_id}.log"
        self.restart_seconds = restart_seconds
        self.source: WorkerSource | None = None
        self.installed = False  # bootstrap done
        self.finished = False  # runs no more: the bootstrap gave up or the instance is gone
        self.attempts = 0
        self.next_attempt = 0.0
        self.powered = True  # the instance is pending/running
        self.process: subprocess.Popen[bytes] | None = None
        self.restart_at: float | None = None
        self.kill_at: float | None = None
        self.stop_reason = ""
        self.starts = 0

    def event(self, message: str) -> None:
        say(f"worker {self.id}: {message}")

    # --- bootstrap (the user-data, once) ---------------------------------------------------

    def bootstrap(self, ec2: Any, now: float) -> None:
        """One bootstrap attempt; on success the worker is installed and started."""
        self.attempts += 1
        try:
            if self.source is None:
                answer = ec2.describe_instance_attribute(InstanceId=self.id, Attribute="userData")
                encoded = answer.get("UserData", {}).get("Value", "")
                try:
                    script = base64.b64decode(encoded).decode()
                except (binascii.Error, UnicodeDecodeError):
                    raise BootstrapError(
                        "its user-data is not base64 of a text script", True
                    ) from None
                self.source = parse_user_data(script)
            self.install(self.source)
        except Exception as error:  # noqa: BLE001 - every failure is reported, none is fatal here
            if not isinstance(error, BootstrapError):
                # Only the type: the message of an unexpected error might quote a URL.
                error = BootstrapError(type(error).__name__)
            if error.final or self.attempts >= FETCH_ATTEMPTS:
                if not error.reported:
                    report(self.source, "fetch-failed", str(error))
                self.finished = True
                self.remove_files()
                self.event(f"bootstrap failed: {error}; not running anything")
            else:
                self.next_attempt = now + FETCH_RETRY_SECONDS
                self.event(f"bootstrap: {error}; trying again in {FETCH_RETRY_SECONDS:g}s")
            return
        self.installed = True
        self.event("bootstrap done (binary checked against its SHA-256, job in place)")
        report(self.source, "installing-postgresql-client", "not emulated by the stand-in")
        report(self.source, "starting-service", "heroku2rds-worker.service")
        self.start()
        if self.process is not None:
            report(self.source, "started", "heroku2rds-worker.service runs")

    def install(self, source: WorkerSource) -> None:
        """Downloads the binary (checked) and the job into the instance's private directory."""
        if self.attempts == 1:
            report(source, "fetching", "the job and heroku2rds")
        self.home.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.home, 0o700)
        self.credentials.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.credentials, 0o700)
        fetch(source.job_url, "job", self.credentials / "job", 0o600)
        download = self.home / ".heroku2rds.download"
        sha = fetch(source.binary_url, "binary", download, 0o700)
        if sha != source.binary_sha256:
            download.unlink()
            report(
                source,
                "binary-checksum-wrong",
                "the downloaded heroku2rds binary does not match its SHA-256; nothing was installed",
            )
            raise BootstrapError("the downloaded binary does not match its SHA-256", True, True)
        os.replace(download, self.binary)

    def remove_files(self) -> None:
        """Removes the binary and the job (the log stays)."""
        shutil.rmtree(self.home, ignore_errors=True)

    # --- the service -----------------------------------------------------------------------

    def start(self) -> None:
        """Starts `heroku2rds worker --job DIR/job` as the unit's ExecStart= does."""
        self.restart_at = None
        self.starts += 1
        env = dict(os.environ, CREDENTIALS_DIRECTORY=str(self.credentials))
        with open(self.log_path, "ab") as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            log.write(f"--- ec2-worker-standin: start {self.starts} at {stamp} ---\n".encode())
            log.flush()
            try:
                self.process = subprocess.Popen(
                    [str(self.binary), "worker", "--job", str(self.credentials / "job")],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    cwd="/",
                    env=env,
                    start_new_session=True,  # its own process group: stopped as a whole
                    preexec_fn=set_parent_death_signal,
                )
            except OSError as error:  # systemd's 203/EXEC: a failure, so restarted
                self.restart_at = time.monotonic() + self.restart_seconds
                self.event(
                    f"cannot start ({error.strerror}), restarting in {self.restart_seconds:g}s"
                )
                return
        self.event(f"started pid {self.process.pid}")

    def has_exited(self) -> bool:
        """Whether the main process has exited, found without reaping it: while it is unreaped
        its pid, and so its process group's id, cannot be reused (see reap)."""
        if self.process is None:
            return False
        if self.process.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return self.process.poll() is not None
        return info is not None

    def signal_group(self, sig: int) -> None:
        """Sends `sig` to the worker's process group (before the leader is reaped)."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, sig)

    def reap(self) -> int:
        """Kills what is left of the group (the unit's cgroup is emptied) and reaps the leader."""
        assert self.process is not None
        self.signal_group(signal.SIGKILL)
        status = self.process.wait()
        self.process = None
        return status

    def stop(self, reason: str, now: float) -> None:
        """Begins stopping: SIGTERM now, SIGKILL at the deadline (see tick)."""
        self.restart_at = None
        self.stop_reason = reason
        if self.process is None:
            self.event(reason)
            return
        if self.kill_at is None:
            self.signal_group(signal.SIGTERM)
            self.kill_at = now + STOP_TIMEOUT_SECONDS

    def stopping(self) -> bool:
        return self.kill_at is not None

    def tick(self, ec2: Any, now: float) -> None:
        """Advances the worker: bootstrap, exits and restarts, stop deadlines."""
        if self.kill_at is not None:
            if self.has_exited():
                self.reap()
                self.kill_at = None
                self.event(f"{self.stop_reason}, stopped")
            elif now >= self.kill_at:
                self.signal_group(signal.SIGKILL)
                self.reap()
                self.kill_at = None
                self.event(
                    f"{self.stop_reason}; still running after {STOP_TIMEOUT_SECONDS:g}s, killed"
                )
            return
        if not self.powered or self.finished:
            return
        if not self.installed:
            if now >= self.next_attempt:
                self.bootstrap(ec2, now)
            return
        if self.process is not None and self.has_exited():
            self.after_exit(self.reap(), now)
        if self.restart_at is not None and now >= self.restart_at:
            self.start()

    def after_exit(self, status: int, now: float) -> None:
        """Restart=on-failure with RestartPreventExitStatus=2 3 4."""
        if status < 0:
            if -status in CLEAN_SIGNALS:
                self.event(f"killed by {signal.Signals(-status).name}, not restarting")
                return
            what = f"killed by signal {-status}"
        elif status in NO_RESTART_STATUSES:
            self.event(f"exited {status}, not restarting")
            return
        else:
            what = f"exited {status}"
        self.restart_at = now + self.restart_seconds
        self.event(f"{what}, restarting in {self.restart_seconds:g}s")

    def power_on(self) -> None:
        """The instance runs (again): the enabled unit starts at boot."""
        if self.powered:
            return
        self.powered = True
        if self.installed and not self.finished:
            self.event("instance running again")
            self.start()


class StandIn:
    """Watches the migration's instances and keeps one Worker per instance."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.migration = args.migration
        self.state_dir = Path(args.state_dir)
        self.restart_seconds = args.restart_seconds
        config = Config(connect_timeout=5, read_timeout=30, retries={"total_max_attempts": 2})
        self.ec2 = boto3.client(
            "ec2",
            region_name=args.region,
            endpoint_url=os.environ["AWS_ENDPOINT_URL"],
            config=config,
        )
        self.workers: dict[str, Worker] = {}
        self.quit = threading.Event()
        self.last_error = ""

    def instances(self) -> dict[str, str] | None:
        """Instance id -> state name of the migration's instances; None when the emulator did
        not answer (then nothing is assumed gone)."""
        states: dict[str, str] = {}
        try:
            pages = self.ec2.get_paginator("describe_instances").paginate(
                Filters=[{"Name": f"tag:{TAG_KEY}", "Values": [self.migration]}]
            )
            for page in pages:
                for reservation in page["Reservations"]:
                    for instance in reservation["Instances"]:
                        states[instance["InstanceId"]] = instance["State"]["Name"]
        except Exception as error:  # noqa: BLE001 - reported once, then polled again
            message = f"DescribeInstances failed ({type(error).__name__}); retrying"
            if message != self.last_error:
                say(message)
                self.last_error = message
            return None
        if self.last_error:
            say("DescribeInstances answers again")
            self.last_error = ""
        return states

    def follow(self, states: dict[str, str], now: float) -> None:
        """Matches the workers to the instances' states."""
        for instance_id, state in states.items():
            worker = self.workers.get(instance_id)
            if state in RUNNING_STATES:
                if worker is None:
                    worker = Worker(instance_id, self.state_dir, self.restart_seconds)
                    self.workers[instance_id] = worker
                    worker.event(f"instance {state}; bootstrapping (log: {worker.log_path})")
                elif not worker.stopping():
                    worker.power_on()
            elif state in POWERED_OFF_STATES and worker is not None and worker.powered:
                worker.powered = False
                worker.stop(f"instance {state} (powered off)", now)
            elif state in GONE_STATES and worker is not None:
                self.retire(worker, "instance terminated", now)
        for instance_id, worker in list(self.workers.items()):
            if instance_id not in states:
                self.retire(worker, "instance gone", now)

    def retire(self, worker: Worker, reason: str, now: float) -> None:
        """Stops the worker for good; its files go once its process is gone."""
        if worker.powered or worker.process is not None:
            worker.powered = False
            worker.stop(reason, now)
        worker.finished = True

    def sweep(self) -> None:
        """Forgets retired workers whose process is gone, removing their binary and job."""
        for instance_id, worker in list(self.workers.items()):
            if worker.finished and worker.process is None and not worker.powered:
                worker.remove_files()
                del self.workers[instance_id]

    def run(self) -> None:
        """Polls until SIGTERM or SIGINT, then stops every worker."""
        say(
            f"playing the EC2 instances tagged {TAG_KEY}={self.migration} "
            f"(state dir {self.state_dir}); stop with SIGTERM or Ctrl-C"
        )
        while not self.quit.is_set():
            now = time.monotonic()
            states = self.instances()
            if states is not None:
                self.follow(states, now)
            for worker in list(self.workers.values()):
                worker.tick(self.ec2, time.monotonic())
            self.sweep()
            self.quit.wait(POLL_SECONDS)
        self.shutdown()

    def shutdown(self) -> None:
        """Stops every worker (SIGTERM, SIGKILL after 10 s, all at once) and removes their
        binaries and jobs."""
        now = time.monotonic()
        for worker in self.workers.values():
            if worker.process is not None:
                worker.stop("stand-in stopping", now)
        while any(worker.process is not None for worker in self.workers.values()):
            now = time.monotonic()
            for worker in self.workers.values():
                if worker.process is not None:
                    worker.tick(self.ec2, now)
            time.sleep(0.1)
        for worker in self.workers.values():
            worker.remove_files()
        say("stopped")


def write_pid_file(path: Path) -> None:
    path.write_text(f"{os.getpid()}\n")


def remove_pid_file(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ec2-worker-standin",
        description="Run the heroku2rds worker of each EC2 instance of a migration on this "
        "machine, as its user-data and systemd unit would (needs AWS_ENDPOINT_URL).",
    )
    parser.add_argument("--migration", required=True, help="the heroku2rds:migration tag value")
    parser.add_argument("--region", default="us-east-2", help="default: us-east-2")
    parser.add_argument(
        "--state-dir", help="where logs, binaries and jobs go (default: a new temp directory)"
    )
    parser.add_argument("--pid-file", help="write this program's pid there")
    parser.add_argument(
        "--restart-seconds",
        type=float,
        default=RESTART_SECONDS,
        help=f"RestartSec= of the stand-in (default {RESTART_SECONDS:g}; 10 on a real worker)",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not os.environ.get("AWS_ENDPOINT_URL"):
        say(
            'AWS_ENDPOINT_URL is not set: run eval "$(localstack/start)" first '
            "(this must not watch real AWS)"
        )
        return 2
    if args.state_dir:
        Path(args.state_dir).mkdir(parents=True, exist_ok=True)
    else:
        args.state_dir = tempfile.mkdtemp(prefix="heroku2rds-ec2-standin-")
    os.umask(0o077)
    stand_in = StandIn(args)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stand_in.quit.set())
    pid_file = Path(args.pid_file) if args.pid_file else None
    if pid_file:
        write_pid_file(pid_file)
    try:
        stand_in.run()
    finally:
        if pid_file:
            remove_pid_file(pid_file)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
