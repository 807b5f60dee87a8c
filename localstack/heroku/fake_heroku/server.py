"""main: parses the arguments, starts the supervisor and both HTTP servers (API and public backup
URLs), and stops everything on SIGTERM, SIGINT or SIGHUP."""

import argparse
import os
import shutil
import signal
import tempfile
import threading
from http.server import ThreadingHTTPServer

from . import supervisor
from .handler import Handler
from .routes_data import SERVER_INFO
from .supervisor import Supervisor
from .util import log


def main():
    p = argparse.ArgumentParser(prog="python3 -m fake_heroku",
                                description="fake Heroku Platform + data API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=int(os.environ.get("FAKE_HEROKU_PORT", 4567)))
    p.add_argument("--public-port", type=int, default=None,
                   help="port of the public backup URLs (default: port + 1)")
    p.add_argument("--pid-file")
    p.add_argument("--data-dir", help="where dumps and dyno logs go (default: a temp dir)")
    args = p.parse_args()
    public_port = args.public_port or args.port + 1

    data_dir = args.data_dir or tempfile.mkdtemp(prefix="fake-heroku-")
    own_data_dir = args.data_dir is None
    os.makedirs(data_dir, exist_ok=True)
    supervisor.SUPERVISOR = Supervisor(data_dir)
    SERVER_INFO["public_host"] = f"{args.host}:{public_port}"

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.allow_reuse_address = True
    api = ThreadingHTTPServer((args.host, args.port), Handler)
    public_handler = type("PublicHandler", (Handler,), {"public_only": True})
    public = ThreadingHTTPServer((args.host, public_port), public_handler)

    supervisor.SUPERVISOR.start()
    done = threading.Event()

    def shutdown(signum, frame):
        if done.is_set():
            return
        done.set()
        log(f"signal {signum}: stopping dynos and servers")
        threading.Thread(target=api.shutdown, daemon=True).start()
        threading.Thread(target=public.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    signal.signal(signal.SIGHUP, shutdown)
    threading.Thread(target=public.serve_forever, daemon=True, name="public").start()
    if args.pid_file:
        with open(args.pid_file, "w") as f:
            f.write(str(os.getpid()))
    log(f"listening on http://{args.host}:{args.port} (public backup URLs on "
        f"http://{args.host}:{public_port}); data dir {data_dir}")
    try:
        api.serve_forever(poll_interval=0.2)
    finally:
        supervisor.SUPERVISOR.kill_all()
        api.server_close()
        public.server_close()
        if own_data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
        if args.pid_file:
            try:
                os.unlink(args.pid_file)
            except OSError:
                pass
        log("stopped")
