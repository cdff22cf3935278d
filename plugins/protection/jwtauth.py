"""JWT bearer identity with PyJWT: HS256 from a shared secret, or RS256/ES256 keys from a JWKS URL (cached).

``protection.jwt`` turns it on. A bearer token that is not an API key
(``pbk_``) nor the admin token is verified: signature, ``exp``, ``nbf``,
``iss`` and ``aud`` (when configured), with only the algorithms the key
material allows — HS256 with a secret, RS256/ES256 with JWKS keys — so
``alg: none`` and an HS256 token signed with a public key are refused.
``sub`` becomes ``context.identity``, the roles claim ``context.roles``,
``exp`` ``context.identity_expires_at`` (WebSockets close when it passes).

JWKS: fetched with aiohttp, kept ``jwks_cache_ttl``, refetched early when a
token names an unknown ``kid`` (at most once per ``jwks_min_refresh``). When
the endpoint is down the cached keys are used; with none cached the request
gets a clear 401 and the failure is logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import attrs
import jwt

from plugboard import validators
from plugboard.graphql.errors import GraphQLError
from plugboard.units import Duration, Secret

logger = logging.getLogger("plugboard.protection")

ASYMMETRIC = ("RS256", "ES256")


@attrs.define(frozen=True, kw_only=True)
class JWTConfig:
    """``protection.jwt``: bearer tokens as identity."""

    enabled: bool = False
    #: HS256 shared secret (or use ``jwks_url``).
    secret: Secret | None = None
    #: RS256/ES256 public keys.
    jwks_url: str | None = None
    issuer: str | None = None
    audience: str | None = None
    #: The claim holding the caller's roles (a list, or a space-separated string).
    roles_claim: str = "roles"
    leeway: Duration = attrs.field(default=0.0, validator=validators.non_negative)
    jwks_cache_ttl: Duration = attrs.field(default=600.0, validator=validators.positive)
    jwks_min_refresh: Duration = attrs.field(default=10.0, validator=validators.positive)
    jwks_timeout: Duration = attrs.field(default=5.0, validator=validators.positive)


class JWKSCache:
    """The JWKS's keys by ``kid``, refreshed after ``ttl`` or for an unknown ``kid``."""

    def __init__(self, config: JWTConfig) -> None:
        self.config = config
        self.keys: dict[str, Any] = {}
        self.fetched_at = 0.0
        self._tried_at = 0.0
        self._lock = asyncio.Lock()

    async def _fetch(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.config.jwks_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with http.get(self.config.jwks_url) as resp:
                resp.raise_for_status()
                data = await resp.json(content_type=None)
        keys = {}
        for jwk in jwt.PyJWKSet.from_dict(data).keys:
            # Kept as PyJWK: each key verifies only its own algorithm (an RS256
            # token naming an EC key's kid is refused, not handed to the wrong verifier).
            if jwk.algorithm_name in ASYMMETRIC:
                keys[jwk.key_id or ""] = jwk
        self.keys = keys
        self.fetched_at = time.monotonic()

    async def key(self, kid: str | None) -> Any:
        now = time.monotonic()
        stale = now - self.fetched_at > self.config.jwks_cache_ttl
        unknown = (kid or "") not in self.keys
        if (stale or unknown) and now - self._tried_at >= self.config.jwks_min_refresh or not self.keys and now - self._tried_at >= 1.0:
            async with self._lock:
                self._tried_at = time.monotonic()
                try:
                    await self._fetch()
                except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, jwt.PyJWKError, jwt.PyJWKSetError) as e:
                    if self.keys:
                        logger.warning("protection: JWKS %s unreachable (%s); using the cached keys", self.config.jwks_url, e)
                    else:
                        logger.error("protection: JWKS %s unreachable (%s) and no keys cached; bearer tokens refused", self.config.jwks_url, e)
        if not self.keys:
            raise GraphQLError("token keys unavailable; try again later", "UNAUTHENTICATED")
        found = self.keys.get(kid or "")
        if found is None and kid is None and len(self.keys) == 1:
            found = next(iter(self.keys.values()))
        if found is None:
            raise GraphQLError("token signed with an unknown key", "UNAUTHENTICATED")
        return found


class JWTVerifier:
    def __init__(self, config: JWTConfig) -> None:
        self.config = config
        self.jwks = JWKSCache(config) if config.jwks_url else None

    async def verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise GraphQLError("malformed bearer token", "UNAUTHENTICATED") from None
        alg = header.get("alg")
        if alg in ASYMMETRIC and self.jwks is not None:
            jwk = await self.jwks.key(header.get("kid"))
            if jwk.algorithm_name != alg:
                raise GraphQLError(f"token algorithm {alg!r} does not match its key ({jwk.algorithm_name})", "UNAUTHENTICATED")
            key, algorithms = jwk.key, [alg]
        elif alg == "HS256" and self.config.secret:
            key, algorithms = self.config.secret, ["HS256"]
        else:
            # alg none, or an algorithm the configured keys do not allow (HS256 against RS256 keys).
            raise GraphQLError(f"token algorithm {alg!r} not accepted", "UNAUTHENTICATED")
        options = {"require": ["exp", "sub"]}
        try:
            return jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=self.config.leeway,
                options=options,
            )
        except jwt.ExpiredSignatureError:
            raise GraphQLError("token expired", "UNAUTHENTICATED") from None
        except jwt.ImmatureSignatureError:
            raise GraphQLError("token not yet valid", "UNAUTHENTICATED") from None
        except jwt.InvalidAudienceError:
            raise GraphQLError("token audience not accepted", "UNAUTHENTICATED") from None
        except jwt.InvalidIssuerError:
            raise GraphQLError("token issuer not accepted", "UNAUTHENTICATED") from None
        except jwt.InvalidSignatureError:
            raise GraphQLError("token signature invalid", "UNAUTHENTICATED") from None
        except jwt.InvalidTokenError as e:
            raise GraphQLError(f"invalid token: {e}", "UNAUTHENTICATED") from None

    def roles(self, claims: dict[str, Any]) -> tuple[str, ...]:
        value = claims.get(self.config.roles_claim)
        if isinstance(value, str):
            return tuple(value.split())
        if isinstance(value, (list, tuple)):
            return tuple(str(v) for v in value)
        return ()
