"""Admin dashboard access: the token check, session cookies holding an HMAC (never the token), CSRF and origins."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

SESSION_COOKIE = "sb_admin_session"
SESSION_MAX_AGE_S = 12 * 3600
CSRF_FIELD = "csrf_token"
_SESSION_VERSION = "v1"
_BEARER_SESSION = "bearer"
# Query parameters that can only mean "here is my token": refused even when the token is right, because URLs end up
# in access logs, proxies and browser history.
_TOKEN_PARAMS = frozenset({"token", "admin_token", "access_token", "auth", "authorization", "key", "api_key"})
_DEFAULT_PORTS = {"http": "80", "https": "443"}
# Clients remembered by the login throttle; the oldest are forgotten past this (a flood cannot grow memory).
_MAX_THROTTLED_CLIENTS = 10_000


@dataclass(frozen=True)
class AdminSession:
    """Who is asking: a logged-in browser (its cookie value) or a caller with the bearer token."""

    session_id: str
    via: str  # "cookie" or "bearer"


class AdminAuth:
    """Checks the admin token and issues and verifies sessions and CSRF tokens, all keyed by the token.

    Changing ADMIN_TOKEN invalidates every session and CSRF token issued before.
    """

    def __init__(self, token: str) -> None:
        self._key = hmac.new(token.encode(), b"slack-backend admin key v1", hashlib.sha256).digest()
        self._token_mac = self._mac("token", token)

    def token_matches(self, candidate: str) -> bool:
        """Constant-time check of a presented token (compared as MACs, so not even its length leaks)."""
        return hmac.compare_digest(self._mac("token", candidate), self._token_mac)

    def new_session(self, now_s: float | None = None) -> str:
        """A fresh cookie value: version, issue time and a random nonce, signed. It does not contain the token."""
        issued = int(time.time() if now_s is None else now_s)
        body = f"{_SESSION_VERSION}.{issued}.{secrets.token_urlsafe(16)}"
        return f"{body}.{self._mac('session', body)}"

    def session_valid(self, value: str, now_s: float | None = None) -> bool:
        """Whether a cookie value is one we issued, unexpired."""
        parts = value.split(".")
        if len(parts) != 4 or parts[0] != _SESSION_VERSION or not parts[1].isdigit():
            return False
        body, mac = ".".join(parts[:3]), parts[3]
        if not _same(self._mac("session", body), mac):
            return False
        age_s = int(time.time() if now_s is None else now_s) - int(parts[1])
        return 0 <= age_s <= SESSION_MAX_AGE_S

    def authenticate(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> AdminSession | None:
        """The session of a request: a right `Authorization: Bearer` token, else a valid session cookie."""
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            if self.token_matches(credentials.strip()):
                return AdminSession(_BEARER_SESSION, "bearer")
            return None  # a wrong bearer token is not rescued by a cookie: the caller meant the header
        # Any other scheme (Basic from an auth_basic proxy in front) is not ours to judge: the cookie decides.
        cookie = cookies.get(SESSION_COOKIE)
        if cookie is not None and self.session_valid(cookie):
            return AdminSession(cookie, "cookie")
        return None

    def token_in_query(self, query: Mapping[str, str]) -> bool:
        """Whether the query string carries a token: a token-like name, or any value equal to the token."""
        return any(name.lower() in _TOKEN_PARAMS or self.token_matches(value) for name, value in query.items())

    def csrf_token(self, session: AdminSession) -> str:
        """The CSRF token of a session: an HMAC of its id, so it needs no server-side storage."""
        return self._mac("csrf", session.session_id)

    def csrf_valid(self, session: AdminSession, candidate: str) -> bool:
        """Whether `candidate` is the session's CSRF token (any text may be given; none raises)."""
        return _same(self.csrf_token(session), candidate)

    def _mac(self, purpose: str, message: str) -> str:
        return hmac.new(self._key, f"{purpose}:{message}".encode(), hashlib.sha256).hexdigest()


def _same(expected: str, given: str) -> bool:
    # compare_digest raises TypeError on non-ASCII str: compare bytes, so a mangled value is just wrong.
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogateescape"))


class LoginThrottle:
    """Counts failed logins per client in a sliding window; past `max_failures` the client must wait.

    Kept in the process (one dashboard per web process): behind several replicas each counts its own share.
    """

    def __init__(
        self, *, max_failures: int = 5, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_failures = max_failures
        self._window_s = window_s
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after_s(self, client: str) -> int:
        """Whole seconds `client` must wait before its next try (0: it may try now)."""
        times = self._recent(client)
        if len(times) < self._max_failures:
            return 0
        return max(1, math.ceil(times[0] + self._window_s - self._clock()))

    def failed(self, client: str) -> None:
        """Count one failed login of `client`."""
        times = self._recent(client)
        times.append(self._clock())
        self._failures[client] = times
        self._failures.move_to_end(client)
        while len(self._failures) > _MAX_THROTTLED_CLIENTS:
            self._failures.popitem(last=False)

    def _recent(self, client: str) -> deque[float]:
        times = self._failures.get(client, deque())
        cutoff = self._clock() - self._window_s
        while times and times[0] <= cutoff:
            times.popleft()
        return times


def cross_site_reason(headers: Mapping[str, str], host: str) -> str | None:
    """Why a state-changing request looks cross-site, or None when it comes from our own pages.

    Browsers send `Sec-Fetch-Site` and `Origin` on every POST; `Referer` is the fallback. A request with none of
    them (curl) passes this check and still needs its CSRF token. Hosts are compared without the scheme, because a
    TLS-terminating proxy makes our own scheme look like http.
    """
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    own = _normal_host(host)
    if not own:
        return "request refused: no Host header"
    origin = headers.get("origin")
    if origin is not None:
        if origin == "null" or _origin_host(origin) != own:
            return "cross-site request refused (Origin does not match this site)"
        return None
    referer = headers.get("referer")
    if referer is not None and _origin_host(referer) != own:
        return "cross-site request refused (Referer does not match this site)"
    return None


def _origin_host(url: str) -> str:
    parts = urlsplit(url)
    if not parts.netloc:
        return ""
    netloc = parts.netloc.rpartition("@")[2].lower()
    default = _DEFAULT_PORTS.get(parts.scheme.lower())
    if default is not None and netloc.endswith(f":{default}"):
        netloc = netloc[: -len(default) - 1]
    return netloc


def _normal_host(host: str) -> str:
    host = host.lower()
    for port in _DEFAULT_PORTS.values():
        if host.endswith(f":{port}"):
            return host[: -len(port) - 1]
    return host
