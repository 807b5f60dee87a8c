"""The supervisor: spawns and reaps dyno processes, moves releases (and their release phase) and
backups along, runs the scheduler and autoscaler add-ons' jobs; and the backup worker (a real
pg_dump). main() sets SUPERVISOR: refer to it as supervisor.SUPERVISOR."""

import ctypes
import os
import signal
import subprocess
import threading
import time
import traceback

from .addon_jobs import tick_autoscaler, tick_scheduler
from .model import STATE
from .ops import finish_oneoff, kill_group, restart_dyno, stop_dyno
from .pg import map_url, pg_env, pg_query_info
from .util import free_port, iso, log


LIBC = None
try:
    LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:
    pass


def _child_setup():
    # Runs in the child after setsid (start_new_session): die with the fake's supervisor thread.
    if LIBC is not None:
        LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Supervisor(threading.Thread):
    def __init__(self, data_dir):
        super().__init__(daemon=True, name="supervisor")
        self.data_dir = data_dir
        self.stopping = False
        self.dyno_log_dir = os.path.join(data_dir, "dynos")
        os.makedirs(self.dyno_log_dir, exist_ok=True)

    def run(self):
        while not self.stopping:
            try:
                with STATE.lock:
                    self.tick()
            except Exception:  # keep supervising whatever happens
                traceback.print_exc()
            time.sleep(0.05)

    def tick(self):
        now = time.time()
        for app in list(STATE.apps.values()):
            self.tick_releases(app, now)
            tick_scheduler(app, now)
            tick_autoscaler(app, now)
            for d in list(app.dynos.values()):
                self.tick_dyno(app, d, now)

    def tick_releases(self, app, now):
        """pending -> succeeded | failed: not before `due` (release_seconds); with a release
        phase, only once its dyno is complete (exit 0: succeeded; non-zero or stopped: failed)
        or at once when release_phase_timeout_seconds pass (the dyno is then stopped)."""
        for rel in app.releases:
            if rel.status != "pending":
                continue
            if rel.phase_dyno is not None and rel.phase_result is None:
                if now < rel.phase_deadline:
                    continue
                rel.phase_result = "failed"
                log(f"{app.name}: release v{rel.version}: release phase timed out")
                stop_dyno(rel.phase_dyno, "remove")
            elif now < rel.due:
                continue
            ok = not rel.fail and rel.phase_result in (None, "ok")
            rel.status = "succeeded" if ok else "failed"
            rel.updated_at = now
            log(f"{app.name}: release v{rel.version} {rel.status}")
            if rel.status == "succeeded" and rel is app.current_release():
                app.released_at = now
                for d in list(app.dynos.values()):
                    if not d.oneoff and d.phase in ("starting", "up", "crashed"):
                        restart_dyno(d)

    def tick_dyno(self, app, d, now):
        if d.phase == "complete":
            if now >= d.complete_until:
                app.dynos.pop(d.name, None)
            return
        if d.phase == "spawn":
            self.spawn(app, d)
            return
        exited = d.proc is not None and d.proc.poll() is not None
        if d.phase == "stopping":
            if exited:
                kill_group(d, signal.SIGKILL)   # whatever the command left behind
                if d.oneoff:
                    finish_oneoff(d, now)
                elif d.after_stop == "remove":
                    app.dynos.pop(d.name, None)
                else:
                    d.phase, d.proc = "spawn", None
                    self.spawn(app, d)
            elif now >= d.kill_at:
                kill_group(d, signal.SIGKILL)
            return
        if d.ttl_deadline and now >= d.ttl_deadline:
            stop_dyno(d, "remove")
            return
        if exited:
            d.exit_status = d.proc.returncode
            kill_group(d, signal.SIGKILL)
            if d.oneoff:
                finish_oneoff(d, now)             # `complete` for a while, then gone
                return
            if d.phase != "crashed":
                log(f"{app.name}: {d.name} exited with status {d.exit_status}: crashed")
                d.phase, d.updated_at = "crashed", now
                d.restart_at = now + app.settings["crash_restart_seconds"]
            elif now >= d.restart_at:
                d.phase, d.proc = "spawn", None
            return
        if d.phase == "starting" and now - d.started_at >= app.settings["dyno_start_seconds"]:
            d.phase, d.updated_at = "up", now

    def spawn(self, app, d):
        # formation dynos run the current release; a one-off dyno the release it was made for
        # (a release dyno: the pending release it releases)
        rel = d.release if d.oneoff and d.release is not None else app.current_release()
        d.release = rel
        env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TZ") if k in os.environ}
        for k, v in (rel.config if rel else app.config).items():
            env[k] = map_url(v, STATE.netmap)
        for k, v in d.extra_env.items():
            env[k] = map_url(v, STATE.netmap)
        d.port = free_port()
        env.update({"DYNO": d.name, "PORT": str(d.port)})
        logf = open(os.path.join(self.dyno_log_dir, f"{app.name}.log"), "ab")
        logf.write(f"--- {iso(time.time())} {d.name} starting (release v{rel.version if rel else 0})\n"
                   .encode())
        logf.flush()
        try:
            d.proc = subprocess.Popen(["bash", "-c", d.command], env=env, stdin=subprocess.DEVNULL,
                                      stdout=logf, stderr=subprocess.STDOUT, cwd=self.data_dir,
                                      start_new_session=True, preexec_fn=_child_setup)
        finally:
            logf.close()
        d.phase, d.started_at, d.updated_at = "starting", time.time(), time.time()

    def kill_all(self):
        """Shutdown: SIGTERM every dyno and backup process group, SIGKILL what remains."""
        self.stopping = True
        with STATE.lock:
            procs = [d.proc for a in STATE.apps.values() for d in a.dynos.values() if d.proc]
            procs += [t.proc for a in STATE.apps.values() for t in a.transfers if t.proc]
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.time() + 2
        while time.time() < deadline and any(p.poll() is None for p in procs):
            time.sleep(0.05)
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass


SUPERVISOR = None   # set by server.main()


def kill_everything_of(apps):
    """Used by reset: stops processes of the given apps at once (no grace)."""
    for app in apps:
        for d in app.dynos.values():
            kill_group(d, signal.SIGKILL)
        for t in app.transfers:
            if t.proc and t.proc.poll() is None:
                try:
                    os.killpg(t.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def run_backup(t):
    """Background thread: a real pg_dump -Fc of the add-on's database into the data dir."""
    url = t.addon.database_url
    netmap = dict(STATE.netmap)
    with STATE.lock:
        t.started_at = t.updated_at = time.time()
        t.add_log("info", f"Starting backup of {t.from_name}")
    info = pg_query_info(url, netmap)
    if info:
        t.source_bytes = info["bytes"]
    err_path = t.file + ".err"
    with open(t.file, "wb") as out, open(err_path, "wb") as err:
        try:
            t.proc = subprocess.Popen(["pg_dump", "-Fc", "--no-acl", "--no-owner"],
                                      env=pg_env(url, netmap), stdout=out, stderr=err,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
            rc = t.proc.wait()
        except OSError as e:
            rc = -1
            err.write(str(e).encode())
    with open(err_path, "rb") as f:
        errtext = f.read().decode("utf-8", "replace")
    os.unlink(err_path)
    # Keep the pacing (processed_bytes growing) for at least min_seconds
    while time.time() - t.started_at < t.min_seconds and t.canceled_at is None:
        time.sleep(0.05)
    with STATE.lock:
        now = time.time()
        t.finished_at = t.updated_at = now
        if t.canceled_at:
            t.succeeded = False
            t.add_log("info", "Backup canceled")
        elif rc == 0 and not t.fail:
            t.succeeded = True
            t.add_log("info", f"pg_dump finished successfully ({t.actual_bytes()} bytes)")
        else:
            t.succeeded = False
            for line in (errtext.strip().splitlines() or ["backup failed"])[-5:]:
                t.add_log("error", line)
            if t.fail:
                t.add_log("error", "backup failed (injected fault)")
        log(f"{t.app.name}: backup {t.label} finished, succeeded={t.succeeded}")
