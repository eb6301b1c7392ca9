"""Bearer tokens with roles: viewer (GET), planner (+ POST plans), operator (+ apply).

Presented tokens are digested and compared against every configured digest in constant time;
the server never holds a token value. Resources declare what they need in `roles`
(HTTP method -> role); `open = True` resources (probes, metrics, webhooks) skip this check.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import falcon

from metalform.api.errors import Forbidden, Unauthorized
from metalform.server.config import ApiToken, Role


@dataclass(frozen=True)
class Principal:
    """Who made a request: the token's name and role."""

    name: str
    role: Role


class Authenticator:
    """Finds the token a request presents."""

    def __init__(self, tokens: Sequence[ApiToken]) -> None:
        self.tokens = tuple(tokens)

    def identify(self, header: str | None) -> Principal:
        scheme, _, value = (header or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized()
        digest = hashlib.sha256(value.strip().encode("utf-8")).digest()
        found: ApiToken | None = None
        # compare against every token, match or not, so timing says nothing about which
        for token in self.tokens:
            if hmac.compare_digest(digest, token.digest) and found is None:
                found = token
        if found is None:
            raise Unauthorized("the bearer token is not valid")
        return Principal(found.name, found.role)


class AuthMiddleware:
    """Checks the role a resource's responder needs before it runs."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]
    ) -> None:
        if resource is None or getattr(resource, "open", False):
            return
        if not hasattr(resource, f"on_{req.method.lower()}"):
            return  # no one may do this: Falcon answers 405, whatever the token
        roles: dict[str, Role] = getattr(resource, "roles", {})
        needed = roles.get(
            req.method, Role.VIEWER if req.method in ("GET", "HEAD") else Role.OPERATOR
        )
        principal = self.authenticator.identify(req.get_header("Authorization"))
        if not principal.role.allows(needed):
            raise Forbidden(
                f"token {principal.name} has role {principal.role.value}; this needs {needed.value}"
            )
        req.context.principal = principal


def who(req: falcon.Request) -> str | None:
    """The name of the token that made the request, for the records."""
    principal = getattr(req.context, "principal", None)
    return principal.name if isinstance(principal, Principal) else None
