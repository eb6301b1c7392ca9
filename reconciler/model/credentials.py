"""Credential: how Metalform authenticates to a BMC or an API. Secrets are references only."""

from __future__ import annotations

import enum

from pydantic import model_validator

from reconciler.model.base import SpecModel
from reconciler.model.registry import Kind


class SecretRef(SpecModel):
    """Where a secret lives: an environment variable or a file. Never the value itself."""

    from_env: str | None = None
    from_file: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.from_env is None) == (self.from_file is None):
            raise ValueError("give exactly one of fromEnv or fromFile")
        return self

    def describe(self) -> str:
        return f"env:{self.from_env}" if self.from_env else f"file:{self.from_file}"


class CredentialType(str, enum.Enum):
    BASIC = "basic"
    TOKEN = "token"


class CredentialSpec(SpecModel):
    type: CredentialType = CredentialType.BASIC
    username: str | None = None
    password: SecretRef | None = None
    token: SecretRef | None = None
    previous: SecretRef | None = None
    """The secret before a rotation (basic only): BMCs still on it are moved to `password`."""

    @model_validator(mode="after")
    def _fields_for_type(self) -> CredentialSpec:
        if self.type is CredentialType.BASIC:
            if self.username is None or self.password is None:
                raise ValueError("a basic credential needs username and password")
            if self.token is not None:
                raise ValueError("a basic credential takes no token")
        else:
            if self.token is None:
                raise ValueError("a token credential needs token")
            if self.password is not None:
                raise ValueError("a token credential takes no password")
            if self.previous is not None:
                raise ValueError("a token credential takes no previous secret")
        return self

    @property
    def secret(self) -> SecretRef:
        ref = self.password if self.type is CredentialType.BASIC else self.token
        assert ref is not None  # guaranteed by _fields_for_type
        return ref


CREDENTIAL = Kind("Credential", CredentialSpec)
