"""The public backup URLs (an S3 stand-in: no Heroku auth; GET, HEAD and Range), served on the
second port."""

import hashlib
import os
import re
import secrets
import time

from .model import STATE
from .routing import Response


def s3_error(status, code, message):
    xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
           f"<Message>{message}</Message><RequestId>{secrets.token_hex(8).upper()}</RequestId>"
           f"</Error>").encode()
    return Response(status, raw=xml, headers={"Content-Type": "application/xml"})


def serve_public(h, method, path, query, auth_state):
    m = re.match(r"^/__public/backups/([^/]+)/([^/]+)$", path)
    if method not in ("GET", "HEAD") or not m:
        return s3_error(405 if m else 404, "MethodNotAllowed" if m else "NoSuchKey",
                        "The specified method is not allowed against this resource." if m
                        else "The specified key does not exist.")
    with STATE.lock:
        t = next((t for a in STATE.apps.values() for t in a.transfers
                  if m.group(1) in t.public_urls and t.uuid == m.group(2)), None)
    if t is None or t.deleted_at:
        return s3_error(403, "AccessDenied", "Access Denied")
    if h.headers.get("Authorization"):
        # S3 refuses a request carrying both a presigned query and an Authorization header.
        return s3_error(400, "InvalidArgument",
                        "Only one auth mechanism allowed; only the X-Amz-Algorithm query "
                        "parameter, Signature query string parameter or the Authorization header "
                        "should be specified")
    if time.time() > t.public_urls[m.group(1)]:
        return s3_error(403, "AccessDenied", "Request has expired")
    size = os.path.getsize(t.file)
    etag = '"' + hashlib.md5(f"{t.uuid}:{size}".encode()).hexdigest() + '"'
    start, end, status = 0, size - 1, 200
    rng = h.headers.get("Range")
    if rng:
        rm = re.match(r"^bytes=(\d*)-(\d*)$", rng.strip())
        if not rm or (rm.group(1) == "" and rm.group(2) == ""):
            return s3_error(416, "InvalidRange", "The requested range is not satisfiable")
        if rm.group(1) == "":
            start = max(0, size - int(rm.group(2)))
        else:
            start = int(rm.group(1))
            end = min(size - 1, int(rm.group(2))) if rm.group(2) else size - 1
        if start >= size or start > end:
            return s3_error(416, "InvalidRange", "The requested range is not satisfiable")
        status = 206
    h.send_response(status)
    h.send_header("Content-Type", "application/octet-stream")
    h.send_header("Content-Length", str(end - start + 1))
    h.send_header("Accept-Ranges", "bytes")
    h.send_header("ETag", etag)
    h.send_header("Last-Modified", time.strftime("%a, %d %b %Y %H:%M:%S GMT",
                                                 time.gmtime(t.finished_at)))
    if status == 206:
        h.send_header("Content-Range", f"bytes {start}-{end}/{size}")
    h.end_headers()
    h._streamed_status = status
    if method == "GET":
        with open(t.file, "rb") as f:
            f.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = f.read(min(1 << 20, left))
                if not chunk:
                    break
                try:
                    h.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    break
                left -= len(chunk)
    return None
