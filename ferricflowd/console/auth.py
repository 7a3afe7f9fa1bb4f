"""Who may act: the console token, login sessions and CSRF tokens.

Reading pages needs nothing (the console listens on loopback by default). Every action, and
showing payload or value bytes, needs the `[console] token`:

- scripts send `Authorization: Bearer <token>`: no cookie is involved, so there is nothing a
  forged cross-site request could borrow, and no CSRF token is asked for;
- a browser logs in once with the token and gets a session cookie (HttpOnly, SameSite=Strict)
  whose value is `<issued>.<nonce>.<mac>`, an HMAC under the token: changing the token ends
  every session, and the server keeps no session table. Each form carries a CSRF token, an
  HMAC of the session under the token, which a page on another site cannot read.

Every comparison is hmac.compare_digest. Without a token the console is read-only.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

__all__ = ["COOKIE", "SESSION_TTL_S", "Auth", "Denied", "Grant"]

COOKIE = "ffconsole"
SESSION_TTL_S = 12 * 3600


class Denied(Exception):
    """An action without the right credentials: 401 (none given) or 403 (wrong, read-only,
    or a form without its CSRF token)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Grant:
    """Who is acting: "bearer" (a script) or "session" (a logged-in browser)."""

    via: str
    session: str = ""


class Auth:
    def __init__(self, token: str) -> None:
        self._token = token.encode()

    @property
    def read_only(self) -> bool:
        return not self._token

    def _mac(self, purpose: str, value: str) -> str:
        return hmac.new(self._token, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()

    def token_ok(self, given: str) -> bool:
        return bool(self._token) and hmac.compare_digest(given.encode(), self._token)

    def new_session(self) -> str:
        """A cookie value for a browser that just gave the right token."""
        body = f"{int(time.time())}.{secrets.token_urlsafe(16)}"
        return f"{body}.{self._mac('session', body)}"

    def session(self, cookie: str | None) -> str | None:
        """The session in a cookie value if its MAC is right and it has not expired."""
        if not cookie or self.read_only:
            return None
        body, _, mac = cookie.rpartition(".")
        issued = body.split(".", 1)[0]
        if not body or not issued.isdigit() or time.time() - int(issued) > SESSION_TTL_S:
            return None
        return body if hmac.compare_digest(mac, self._mac("session", body)) else None

    def csrf(self, session: str) -> str:
        return self._mac("csrf", session)

    def grant(self, authorization: str | None, cookie: str | None) -> Grant | None:
        """Credentials of a request, checked; None when it carries none that are valid."""
        if self.read_only:
            return None
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and self.token_ok(given.strip()):
            return Grant("bearer")
        session = self.session(cookie)
        return Grant("session", session) if session else None

    def authorize(self, authorization: str | None, cookie: str | None,
                  csrf: str | None) -> Grant:
        """The grant of an action, or Denied saying why not."""
        if self.read_only:
            raise Denied(403, "this console is read-only: set [console] token (or "
                              "FERRICFLOWD_CONSOLE_TOKEN) to allow actions")
        if authorization:
            grant = self.grant(authorization, None)
            if grant is None:
                raise Denied(403, "wrong token")
            return grant
        session = self.session(cookie)
        if session is None:
            raise Denied(401, "log in with the console token, or send Authorization: Bearer")
        if not csrf or not hmac.compare_digest(csrf, self.csrf(session)):
            raise Denied(403, "the form's CSRF token is missing or wrong; reload the page")
        return Grant("session", session)
