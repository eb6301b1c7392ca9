"""Redfish multipart HTTP push updates (`UpdateService.MultipartHttpPushUri`, Redfish 1.6+).

The image is sent as `multipart/form-data` with two parts (DSP0266, "Multipart HTTP push
updates"): `UpdateParameters`, a JSON document naming the `Targets` (and the
`@Redfish.OperationApplyTime` when the service says it takes one), and `UpdateFile`, the image
itself, streamed from a file rather than built in memory. The BMC answers 202 with the task
monitor in `Location`, followed like SimpleUpdate's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import IO, Any

import requests
import sushy
from requests_toolbelt import MultipartEncoder

from providers.redfish.client import BmcConnection
from reconciler.errors import PermanentError

MULTIPART = "MultipartHttpPushUri"
SIMPLE_UPDATE = "#UpdateService.SimpleUpdate"
APPLY_TIME_SUPPORT = MULTIPART + "@Redfish.OperationApplyTimeSupport"
IMMEDIATE = "Immediate"


def push_uri(service: Mapping[str, Any]) -> str | None:
    """The UpdateService's multipart push URI, or None when it publishes none."""
    uri = service.get(MULTIPART)
    return uri if isinstance(uri, str) and uri else None


def offers_simple_update(service: Mapping[str, Any]) -> bool:
    return SIMPLE_UPDATE in (service.get("Actions") or {})


def parameters(service: Mapping[str, Any], target: str) -> dict[str, Any]:
    """The `UpdateParameters` part: the target, and `Immediate` when the BMC takes an apply time.

    The plan follows the task to its end now and makes the reset its own gated action, so the
    flash must start at once; a BMC left to its default may hold the image until a reset that
    only comes after the task ends. Services that do not announce apply-time support get no
    annotation (some reject properties they do not know).
    """
    params: dict[str, Any] = {"Targets": [target]}
    support = service.get(APPLY_TIME_SUPPORT)
    values = support.get("SupportedValues") if isinstance(support, Mapping) else None
    if isinstance(values, list) and IMMEDIATE in values:
        params["@Redfish.OperationApplyTime"] = IMMEDIATE
    return params


def push(
    conn: BmcConnection,
    uri: str,
    update_parameters: Mapping[str, Any],
    image: IO[bytes],
    filename: str,
    timeout: float,
) -> str:
    """POST the image to the push URI; the path of the task (monitor) the BMC started."""
    body = MultipartEncoder(
        fields={
            "UpdateParameters": (None, json.dumps(update_parameters), "application/json"),
            "UpdateFile": (filename, image, "application/octet-stream"),
        }
    )
    connector = conn.connector
    # sushy's connector only sends JSON bodies; its session carries the login, the TLS setting
    # and the per-BMC connection limit, so the upload goes through that session directly.
    url = connector._url.rstrip("/") + "/" + uri.lstrip("/")
    try:
        response = connector._session.post(
            url,
            data=body,
            headers={"Content-Type": body.content_type, "OData-Version": "4.0"},
            verify=connector._verify,
            timeout=timeout,
        )
    except requests.RequestException as exc:  # as sushy reports it, for the same translation
        raise sushy.exceptions.ConnectionError(url=url, error=exc) from None
    sushy.exceptions.raise_for_response("POST", url, response)
    location = response.headers.get("Location")
    if not location:
        try:
            location = response.json().get("@odata.id")
        except ValueError:
            location = None
    if not isinstance(location, str) or not location:
        raise PermanentError(
            f"{conn.endpoint}: the multipart update was accepted ({response.status_code}) "
            "but the BMC named no task to follow"
        )
    return location
