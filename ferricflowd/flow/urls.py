"""Store URLs: the check the config loader and Store share, and redaction for logs.

Kept apart from store.py so that checking a config does not import redis-py (~0.1 s): the
supervisor loads its config, and spawns its workers, without it. Only a URL with ?options
needs redis-py's parser to be checked.
"""

from __future__ import annotations

import inspect
from urllib.parse import unquote, urlsplit

from .errors import InvalidArgument

_SECRET_PARAMS = frozenset({"password", "ssl_password"})  # redis-py takes these from ?query
SCHEMES = ("redis://", "rediss://", "unix://")


def redact(url: str) -> str:
    """The URL without its password (in the user part or the query), for logs and errors."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, host = netloc.rpartition("@")
            netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
        query = "&".join(
            f"{p.partition('=')[0]}=***" if unquote(p.partition("=")[0]).lower() in _SECRET_PARAMS
            else p for p in parts.query.split("&")) if parts.query else ""
        if (netloc, query) == (parts.netloc, parts.query):
            return url  # nothing secret (and "unix:///path" stays as written)
        return parts._replace(netloc=netloc, query=query).geturl()
    except ValueError:  # e.g. an unbalanced "[" in the host
        return "(unparsable URL)"


def url_problem(url: str) -> str | None:
    """What is wrong with a store URL (the URL shown redacted), or None. Catches what redis-py
    would only reject at the first connection, with a TypeError from deep inside (e.g.
    ?ssl_ca_certs= on a redis:// URL, or a misspelt option). The config loader uses it too."""
    try:
        check_url(url)
    except InvalidArgument as exc:
        return str(exc).removeprefix("url: ")
    return None


def check_url(url: str) -> None:
    """InvalidArgument("url", ...) unless redis-py can connect with this URL as it is."""
    if not url.startswith(SCHEMES):
        raise InvalidArgument("url", f"not a redis://, rediss:// or unix:// URL: {redact(url)}")
    if "?" not in url:
        # Without options redis-py's parser can only fail on the port, which urllib checks
        # the same way (redis-py parses with urlparse).
        try:
            _ = urlsplit(url).port
        except ValueError as exc:
            raise InvalidArgument("url", f"{exc}: {redact(url)}") from None
        return
    _check_options(url)


def _check_options(url: str) -> None:
    import redis  # only for URLs with ?options: see the module docstring

    try:
        options = redis.connection.parse_url(url)
    except ValueError as exc:
        raise InvalidArgument("url", f"{exc}: {redact(url)}") from None
    cls = (redis.SSLConnection if url.startswith("rediss://") else
           redis.UnixDomainSocketConnection if url.startswith("unix://") else redis.Connection)
    accepted = {"max_connections", "connection_class"}  # taken by the pool
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            accepted |= set(inspect.signature(klass.__init__).parameters)
    unknown = sorted(set(options) - accepted)
    if unknown:
        hint = " (TLS options need a rediss:// URL)" if any(
            k.startswith("ssl") for k in unknown) else ""
        raise InvalidArgument("url", f"unknown option(s) {', '.join(unknown)}{hint}: "
                              f"{redact(url)}")
