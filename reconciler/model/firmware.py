"""FirmwareBaseline: the firmware versions a kind of server must run, and where to get them."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from reconciler.model.base import SpecModel
from reconciler.model.hardware import Match
from reconciler.model.registry import Kind

SHA256 = re.compile(r"[0-9a-fA-F]{64}")
"""A SHA-256 digest in hex, matched with `fullmatch` (`$` would accept a trailing newline)."""


class FirmwareImage(SpecModel):
    url: str = Field(description="http(s) URL the BMC downloads the image from")
    sha256: str = Field(description="SHA-256 of the image, 64 hex digits")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @field_validator("sha256")
    @classmethod
    def _digest(cls, value: str) -> str:
        if not SHA256.fullmatch(value):
            raise ValueError("must be exactly 64 hexadecimal digits")
        return value.lower()


class FirmwareComponent(SpecModel):
    name: str = Field(
        min_length=1, description="Id or Name of a member of the BMC's FirmwareInventory"
    )
    version: str = Field(min_length=1)
    image: FirmwareImage


class FirmwareBaselineSpec(SpecModel):
    match: Match | None = None
    components: list[FirmwareComponent] = Field(min_length=1)
    allow_downgrade: bool = False

    @model_validator(mode="after")
    def _unique_names(self) -> FirmwareBaselineSpec:
        names = [c.name for c in self.components]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"component {', '.join(twice)} is listed more than once")
        return self


FIRMWARE_BASELINE = Kind("FirmwareBaseline", FirmwareBaselineSpec)
