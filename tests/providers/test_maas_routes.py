"""The MAAS simulator's HTTP routing at the edges: what is anonymous, what needs a signature,
and what no route answers (the provider tests cover the routes libmaas uses)."""

from __future__ import annotations

import pytest
import requests

from metalform.lab.maas import MaasPeer, sign_headers


def call(peer: MaasPeer, method: str, path: str, *, signed: bool = True) -> requests.Response:
    url = f"http://{peer.host}:{peer.port}{path}"
    headers = sign_headers(peer.api_key, url, method) if signed else {}
    return requests.request(method, url, headers=headers, timeout=5)


@pytest.mark.parametrize("what", ["describe/", "version/"])
def test_describe_and_version_are_read_anonymously(maas_peer: MaasPeer, what: str) -> None:
    response = call(maas_peer, "GET", f"/MAAS/api/2.0/{what}", signed=False)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("path", ["/MAAS/api/2.0/machines/", "/MAAS/_lab/machines"])
def test_unsigned_requests_are_refused(maas_peer: MaasPeer, path: str) -> None:
    response = call(maas_peer, "GET", path, signed=False)
    assert response.status_code == 401
    assert response.text.startswith("Authorization Error")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/MAAS/api/2.0/machines/"),
        ("GET", "/MAAS/api/2.0/machines/abc/def/"),
        ("POST", "/MAAS/api/2.0/machines/abc/"),  # a machine POST needs an op
        ("PUT", "/MAAS/api/2.0/tags/"),
        ("POST", "/MAAS/api/2.0/tags/gpu/?op=nothing"),
        ("GET", "/MAAS/api/2.0/zones/"),
        ("PUT", "/MAAS/_lab/faults"),
        ("GET", "/MAAS/_lab/nothing"),
        ("GET", "/elsewhere/"),
    ],
)
def test_no_route_is_a_404_naming_the_request(maas_peer: MaasPeer, method: str, path: str) -> None:
    response = call(maas_peer, method, path)
    assert response.status_code == 404
    assert response.text == f"no route for {method} {path.split('?')[0]}"


def test_lab_routes_read_the_request_log(maas_peer: MaasPeer) -> None:
    maas_peer.requests_seen(clear=True)
    assert call(maas_peer, "GET", "/MAAS/api/2.0/tags/").status_code == 200
    assert call(maas_peer, "GET", "/MAAS/api/2.0/machines/?hostname=maas-read").ok
    assert maas_peer.requests_seen(clear=True) == ["GET tags/", "GET machines/?hostname=maas-read"]
    assert maas_peer.requests_seen() == []
