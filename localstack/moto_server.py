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
"""

from __future__ import annotations

import atexit
import os
import sys
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
from moto.rds import models as rds_models  # noqa: E402


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
FIXES = [
    fix_cross_region_replica_removal,
    fix_query_body_signature_encoding,
    fix_presigned_urls_under_enforcement,
    fix_form_typed_object_uploads,
]


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
