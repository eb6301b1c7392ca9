"""Bearer tokens with roles: viewer (GET), planner (+ POST plans), operator (+ apply).

Presented tokens are digested and compared against every configured digest in constant time;
the server never holds a token value. Resources declare what they need in `roles`
(HTTP method -> role); `open = True` resources (probes, metrics, webhooks, the console's
pages, which check their session themselves) skip this check. GET requests without an
`Authorization` header may present the web console's session cookie instead (the console's
EventSource cannot send a header); requests that change something always need the token.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
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
        return self.token(value)

    def token(self, value: str) -> Principal:
        """The principal of a token value (from a header or the console's sign-in form)."""
        if not value.strip():
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


SessionLookup = Callable[[falcon.Request], Principal | None]
"""Who a request's console session cookie names, or None."""


class AuthMiddleware:
    """Checks the role a resource's responder needs before it runs."""

    def __init__(self, authenticator: Authenticator, session: SessionLookup | None = None) -> None:
        self.authenticator = authenticator
        self.session = session

    def _principal(self, req: falcon.Request) -> Principal:
        header = req.get_header("Authorization")
        if header is None and req.method in ("GET", "HEAD") and self.session is not None:
            principal = self.session(req)
            if principal is not None:
                return principal
        return self.authenticator.identify(header)

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
        principal = self._principal(req)
        if not principal.role.allows(needed):
            raise Forbidden(
                f"token {principal.name} has role {principal.role.value}; this needs {needed.value}"
            )
        req.context.principal = principal


def who(req: falcon.Request) -> str | None:
    """The name of the token that made the request, for the records."""
    principal = getattr(req.context, "principal", None)
    return principal.name if isinstance(principal, Principal) else None
