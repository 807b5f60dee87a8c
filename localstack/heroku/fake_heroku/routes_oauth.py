"""Platform API routes: OAuth authorizations, one per token of the account (what `heroku
auth:token` reads to warn about the token's expiry: access_token.token and expires_in)."""

from urllib.parse import unquote

from .model import STATE
from .routing import Response, route
from .util import HerokuError


def own_authorizations(c):
    return [t for t in STATE.tokens.values() if t.account is c.account]


def find_authorization(c, ident):
    ident = unquote(ident)
    for t in own_authorizations(c):
        if t.id == ident:
            return t
    raise HerokuError(404, "not_found", "Couldn't find that authorization.",
                      resource="authorization")


@route("GET", "/oauth/authorizations")
def authorizations_list(c):
    return c.list([t.authorization_json() for t in own_authorizations(c)])


@route("GET", "/oauth/authorizations/(?P<auth>[^/]+)")
def authorization_info(c, auth):
    return Response(200, find_authorization(c, auth).authorization_json())


@route("DELETE", "/oauth/authorizations/(?P<auth>[^/]+)")
def authorization_revoke(c, auth):
    """Revoking forgets the token: later requests with it answer 401."""
    t = find_authorization(c, auth)
    body = t.authorization_json()
    STATE.tokens.pop(t.value, None)
    return Response(200, body)
