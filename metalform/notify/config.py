"""From resources to channels: one delivery channel per NotificationChannel, and the error that
lists every problem of the notification resources at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import requests

from metalform.notify.channels import (
    Channel,
    CredentialResolver,
    EmailChannel,
    HttpChannel,
    SecretResolver,
    SmtpEndpoint,
)
from reconciler.errors import MetalformError
from reconciler.load import DesiredState
from reconciler.model.notifications import ChannelType, NotificationChannelSpec
from reconciler.model.providers import ProviderSpec, ProviderType


class NotificationConfigError(MetalformError):
    """The notification resources cannot be used; `problems` lists each one."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("notifications: " + "; ".join(self.problems))


def build_channel(
    name: str,
    spec: NotificationChannelSpec,
    desired: DesiredState,
    credential_resolver: CredentialResolver,
    secret_resolver: SecretResolver,
    *,
    session: requests.Session | None = None,
    timeout: float = 10.0,
) -> Channel:
    """One channel from its spec; an email channel takes its server from an smtp Provider."""
    if spec.type is not ChannelType.EMAIL:
        assert spec.url is not None  # the model requires it
        return HttpChannel(
            name,
            spec.type,
            spec.url,
            resolve_secret=secret_resolver,
            session=session,
            timeout=timeout,
        )
    assert spec.email is not None
    where = f"NotificationChannel/{name}"
    provider = desired.get("Provider", spec.email.provider, ProviderSpec)
    if provider is None:
        raise NotificationConfigError([f"{where}: Provider {spec.email.provider} is not defined"])
    if provider.spec.type is not ProviderType.SMTP:
        raise NotificationConfigError(
            [
                f"{where}: Provider/{spec.email.provider} is of type "
                f"{provider.spec.type.value}, not smtp"
            ]
        )
    try:
        endpoint = SmtpEndpoint.parse(provider.spec.url)
    except ValueError as exc:
        raise NotificationConfigError([f"Provider/{spec.email.provider}: {exc}"]) from None
    return EmailChannel(
        name,
        endpoint=endpoint,
        sender=spec.email.from_,
        recipients=spec.email.to,
        provider=spec.email.provider,
        credential=provider.spec.credential,
        resolve_credential=credential_resolver,
        verify_tls=provider.spec.verify_tls,
        timeout=min(timeout, provider.spec.timeout),
    )
