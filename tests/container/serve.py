"""A tiny HTTP server for the user-data test: GET serves the files of a directory, PUT stores
the request's body as a file there (what S3 does with the presigned URLs of the worker's
user-data). Usage: serve.py DIR PORT (binds 127.0.0.1)."""

import http.server
import os
import sys
from pathlib import Path

ROOT = Path(sys.argv[1])


class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=str(ROOT), **kwargs)

    def do_PUT(self):  # noqa: N802 - the http.server naming
        name = os.path.basename(self.path.split("?", 1)[0])
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        (ROOT / name).write_bytes(body)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Handler).serve_forever()
