"""A throwaway PostgreSQL cluster for the fake Heroku's tests.

initdb refuses to run as root, so when we are root the cluster belongs to the `postgres` user
(commands run through `runuser -u postgres --`) in a temp dir that user owns. Always stopped and
removed by stop(), which is idempotent.
"""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time


def pg_bindir():
    explicit = os.environ.get("PG_BINDIR")
    if explicit:
        return explicit
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                  key=lambda d: int(d.split("/")[-2]) if d.split("/")[-2].isdigit() else 0)
    if not dirs:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin "
                           "(apt-get install postgresql), or set PG_BINDIR")
    return dirs[-1]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Cluster:
    def __init__(self):
        self.bindir = pg_bindir()
        self.port = free_port()
        self.root = os.geteuid() == 0
        self.dir = tempfile.mkdtemp(prefix="fake-heroku-pg-")
        self.data = os.path.join(self.dir, "data")
        self.started = False
        if self.root:
            shutil.chown(self.dir, "postgres", "postgres")

    def _run(self, args, **kw):
        cmd = ([os.path.join(self.bindir, args[0])] + args[1:])
        if self.root:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)

    def start(self):
        self._run(["initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "--no-sync",
                   "-E", "UTF8", "--locale=C"])
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                f"-c unix_socket_directories={self.dir} -c fsync=off "
                f"-c max_connections=40 -c shared_buffers=32MB")
        self._run(["pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "log"), "-w",
                   "-t", "30", "-o", opts, "start"])
        self.started = True
        return self

    def psql(self, sql, db="postgres", user="postgres"):
        env = dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(self.port), PGUSER=user,
                   PGDATABASE=db)
        args = ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-A", "-t"]
        for stmt in ([sql] if isinstance(sql, str) else sql):   # one -c per transaction
            args += ["-c", stmt]
        out = subprocess.run(args,
                             env=env, check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def url(self, user, password, db):
        return f"postgres://{user}:{password}@127.0.0.1:{self.port}/{db}"

    def stop(self):
        if self.started:
            try:
                self._run(["pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop"])
            except subprocess.CalledProcessError:
                pass
            self.started = False
        # Anything of this cluster still alive (should be nothing) dies with its postmaster pid.
        pidfile = os.path.join(self.data, "postmaster.pid")
        if os.path.exists(pidfile):
            try:
                pid = int(open(pidfile).readline())
                os.kill(pid, 9)
                time.sleep(0.2)
            except (ValueError, OSError):
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
