"""The dashboard login under attack (issue 9, finding 8).

The review sent 200 wrong tokens in 0.09 s, all checked; a session cookie
stayed valid after logout; the cookie was never ``Secure`` behind a
TLS-terminating proxy. Now wrong tokens are throttled per address with
backoff (the login form and bearer tokens alike), logout revokes the session
(a copy of the cookie no longer works), rotating ``server.admin_token`` ends
every session, and the cookie is ``Secure`` when the client used HTTPS
(``server.trust_proxy_headers`` believes ``X-Forwarded-Proto``). Real servers
on loopback; the throttle's clock is the test's where waits matter.
"""

from __future__ import annotations

import re
import time
from http.cookies import SimpleCookie

import aiohttp
import pytest
from dashboard_testkit import TOKEN, RoleAuth
from yarl import URL

from plugboard import hookimpl
from plugboard.plugins.jobs.dashboard import access
from plugboard.plugins.jobs.dashboard.guard import MAX_WAIT, LoginThrottle, wait_after
from plugboard.providers.ratelimit import WindowState
from plugboard.providers.registry import ProviderSpec


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def guard_of(app):
    """The app's LoginGuard (on the Dashboard whose bound handlers the routes hold)."""
    for route in app.router.routes():
        view = getattr(route.handler, "__self__", None)
        if view is not None and hasattr(view, "guard"):
            return view.guard
    raise AssertionError("no dashboard route")


def with_clock(app) -> Clock:
    clock = Clock()
    guard_of(app).throttle = LoginThrottle(clock=clock)
    return clock


async def try_login(client, token: str, headers: dict | None = None) -> aiohttp.ClientResponse:
    resp = await client.post("/jobs/login", data={"token": token}, headers=headers, allow_redirects=False)
    await resp.read()
    return resp


def session_morsel(resp):
    header = next((h for h in resp.headers.getall("Set-Cookie", []) if h.startswith(access.SESSION_COOKIE + "=")), None)
    return SimpleCookie(header)[access.SESSION_COOKIE] if header else None


async def csrf_of(client) -> str:
    page = await (await client.get("/jobs")).text()
    return re.search(r'data-csrf="([^"]+)"', page).group(1)


def test_backoff_doubles_up_to_the_cap():
    assert [wait_after(n) for n in range(1, 10)] == [0, 0, 0, 0, 1, 2, 4, 8, 16]
    assert wait_after(40) == MAX_WAIT == wait_after(10_000)


async def test_the_review_probe_200_wrong_tokens_is_throttled(client):
    clock = with_clock(client.server.app)
    statuses = []
    started = time.monotonic()
    for n in range(200):
        resp = await try_login(client, f"guess-{n}")
        statuses.append(resp.status)
    assert time.monotonic() - started < 30
    # Five guesses are checked (the fifth starts the first wait), then nothing is.
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}
    throttled = await try_login(client, TOKEN)
    # While the address waits, even the right token is refused: no answer leaks.
    assert throttled.status == 429 and throttled.headers["Retry-After"] == "1"
    assert "Too many wrong tokens" in await throttled.text()
    assert session_morsel(throttled) is None

    clock.now += 1.0
    sixth = await try_login(client, "guess-again")
    assert sixth.status == 401 and "Wait 2 s before trying again." in await sixth.text()
    assert (await try_login(client, TOKEN)).headers["Retry-After"] == "2"
    clock.now += 2.0
    ok = await try_login(client, TOKEN)
    assert ok.status == 303 and session_morsel(ok) is not None
    # The right token reset the count: the next wrong one is one of five free guesses again.
    again = await try_login(client, "typo")
    assert again.status == 401 and "Wait" not in await again.text()


async def test_bearer_guesses_are_throttled_too(client, admin):
    clock = with_clock(client.server.app)
    statuses = [(await client.get("/jobs/api/summary", headers={"Authorization": f"Bearer guess-{n}"})).status for n in range(8)]
    assert statuses == [401] * 5 + [429] * 3
    refused = await client.get("/jobs/api/summary", headers=admin)
    assert refused.status == 429 and refused.headers["Retry-After"] == "1"
    assert (await refused.json())["error"]["code"] == "TOO_MANY_REQUESTS"
    # The page and the login form share the count.
    assert (await client.get("/jobs", headers={"Authorization": "Bearer nope"})).status == 429
    assert (await try_login(client, TOKEN)).status == 429
    clock.now += 1.0
    assert (await client.get("/jobs/api/summary", headers=admin)).status == 200
    assert (await client.get("/jobs/api/summary", headers={"Authorization": "Bearer x"})).status == 401


async def test_identities_from_an_auth_plugin_are_not_guesses(app_factory, aiohttp_client):
    client = await aiohttp_client(app_factory(extra=(RoleAuth(),)))
    with_clock(client.server.app)
    # alice is signed in (just not an admin): her requests are no attempt at the admin token.
    for _ in range(12):
        assert (await client.get("/jobs/api/summary", headers={"Authorization": "Bearer alice"})).status == 401
    assert (await client.get("/jobs/api/summary", headers={"Authorization": "Bearer root"})).status == 200
    # A token the auth plugin rejects proves nothing: it counts.
    statuses = [(await client.get("/jobs/api/summary", headers={"Authorization": "Bearer bad"})).status for _ in range(7)]
    assert statuses[-1] == 429


async def test_logout_ends_the_session_even_for_a_copy_of_the_cookie(client):
    resp = await try_login(client, TOKEN)
    stolen = session_morsel(resp).value
    csrf = await csrf_of(client)
    assert (await client.post("/jobs/logout", headers={"X-Plugboard-CSRF": csrf})).status == 204

    url = URL(str(client.make_url("/jobs/api/summary")))
    client.session.cookie_jar.clear()
    client.session.cookie_jar.update_cookies({access.SESSION_COOKIE: stolen}, url)
    assert (await client.get("/jobs/api/summary")).status == 401
    page = await client.get("/jobs")
    assert page.status == 401 and "<form" in await page.text()
    assert len(guard_of(client.server.app).revoked) == 1

    # Other sessions are not affected.
    client.session.cookie_jar.clear()
    await try_login(client, TOKEN)
    assert (await client.get("/jobs/api/summary")).status == 200


async def test_rotating_the_admin_token_ends_every_session(app_factory, aiohttp_server):
    before = await aiohttp_server(app_factory())
    async with aiohttp.ClientSession() as session:
        resp = await session.post(before.make_url("/jobs/login"), data={"token": TOKEN}, allow_redirects=False)
        cookie = session_morsel(resp).value
    async with aiohttp.ClientSession(cookies={access.SESSION_COOKIE: cookie}) as session:
        assert (await session.get(before.make_url("/jobs/api/summary"))).status == 200
    await before.close()
    # The same deployment restarted with a new token.
    after = await aiohttp_server(app_factory(token="rotated-admin-token-9876543210"))
    async with aiohttp.ClientSession(cookies={access.SESSION_COOKIE: cookie}) as session:
        assert (await session.get(after.make_url("/jobs/api/summary"))).status == 401


@pytest.mark.parametrize(
    "trust, headers, secure",
    [
        (False, {}, False),
        (False, {"X-Forwarded-Proto": "https"}, False),  # not believed unless trusted
        (True, {"X-Forwarded-Proto": "https"}, True),
        (True, {"X-Forwarded-Proto": "http"}, False),
        (True, {"X-Forwarded-Proto": "https, http"}, False),  # the last value is the proxy's
        (True, {}, False),
    ],
)
async def test_cookie_is_secure_when_the_client_used_https(app_factory, aiohttp_client, trust, headers, secure):
    client = await aiohttp_client(app_factory(server={"trust_proxy_headers": trust}))
    resp = await try_login(client, TOKEN, headers=headers)
    assert resp.status == 303
    assert bool(session_morsel(resp)["secure"]) is secure


async def test_behind_a_trusted_proxy_each_client_address_is_counted_apart(app_factory, aiohttp_client):
    trusting = await aiohttp_client(app_factory(server={"trust_proxy_headers": True}))
    with_clock(trusting.server.app)
    for _ in range(6):
        await try_login(trusting, "guess", headers={"X-Forwarded-For": "198.51.100.7"})
    assert (await try_login(trusting, "guess", headers={"X-Forwarded-For": "198.51.100.7"})).status == 429
    assert (await try_login(trusting, TOKEN, headers={"X-Forwarded-For": "198.51.100.8"})).status == 303
    # A forged first hop does not give the attacker a fresh address: the proxy's last value counts.
    assert (await try_login(trusting, "guess", headers={"X-Forwarded-For": "10.9.9.9, 198.51.100.7"})).status == 429

    direct = await aiohttp_client(app_factory(server={"trust_proxy_headers": False}))
    with_clock(direct.server.app)
    for n in range(6):
        await try_login(direct, "guess", headers={"X-Forwarded-For": f"203.0.113.{n}"})
    # Not behind a trusted proxy: the header is ignored, the peer is counted.
    assert (await try_login(direct, TOKEN, headers={"X-Forwarded-For": "203.0.113.99"})).status == 429


# -- with the core's ratelimit service -------------------------------------------------


class SharedStore:
    """A RateLimitStore over one dict, shared by every app given it: two instances on one Redis."""

    def __init__(self, state: dict) -> None:
        self.state = state

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def check(self) -> None: ...

    async def incr(self, key: str, amount: int = 1, *, expiry: float) -> int:
        value, until = self.state.get(key, (0, time.monotonic() + expiry))
        self.state[key] = (value + amount, until)
        return value + amount

    def _hits(self, key: str, window: float) -> list[float]:
        now = time.monotonic()
        hits = [t for t in self.state.get(key, []) if now - t < window]
        self.state[key] = hits
        return hits

    async def hit(self, key: str, *, limit: int, window: float, cost: int = 1) -> WindowState:
        hits = self._hits(key, window)
        if len(hits) + cost > limit:
            return WindowState(allowed=False, remaining=0, reset_after=window - (time.monotonic() - hits[0]))
        hits.extend([time.monotonic()] * cost)
        return WindowState(allowed=True, remaining=limit - len(hits), reset_after=window)

    async def peek(self, key: str, *, limit: int, window: float) -> WindowState:
        hits = self._hits(key, window)
        if len(hits) >= limit:
            return WindowState(allowed=False, remaining=0, reset_after=window - (time.monotonic() - hits[0]))
        return WindowState(allowed=True, remaining=limit - len(hits), reset_after=0.0)

    async def reset(self, key: str) -> None:
        self.state.pop(key, None)


class SharedStorePlugin:
    def __init__(self, state: dict) -> None:
        self.state = state

    @hookimpl
    def plugboard_providers(self):
        return [ProviderSpec(kind="ratelimit", name="shared", factory=lambda: SharedStore(self.state))]


async def test_the_ratelimit_service_carries_throttle_and_logout_across_instances(app_factory, aiohttp_client):
    state: dict = {}
    services = {"ratelimit": {"provider": "shared"}}
    one = await aiohttp_client(app_factory(extra=(SharedStorePlugin(state),), services=services))
    two = await aiohttp_client(app_factory(extra=(SharedStorePlugin(state),), services=services))
    for n in range(5):
        assert (await try_login(one, f"guess-{n}")).status == 401
    # The other instance knows: the address waits there too.
    refused = await try_login(two, TOKEN)
    assert refused.status == 429 and refused.headers["Retry-After"] == "1"

    state.clear()
    stolen = session_morsel(await try_login(one, TOKEN)).value
    csrf = await csrf_of(one)
    assert (await one.post("/jobs/logout", headers={"X-Plugboard-CSRF": csrf})).status == 204
    two.session.cookie_jar.update_cookies({access.SESSION_COOKIE: stolen}, URL(str(two.make_url("/jobs"))))
    # Logged out on one instance, refused on the other.
    assert (await two.get("/jobs/api/summary")).status == 401
