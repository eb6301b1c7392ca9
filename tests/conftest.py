"""Test-wide fixtures. Peers (emulated BMCs, ...) live in tests/fixtures/, one module each."""

import atexit
import os
import shutil
import tempfile

import pytest

# Fingerprints need a key; tests must not create one in the user's home.
os.environ.setdefault("METALFORM_FINGERPRINT_KEY", "metalform-tests")
# Metalform's cache (Redfish attribute registries) is this run's, not the user's.
os.environ["METALFORM_CACHE_DIR"] = tempfile.mkdtemp(prefix="metalform-test-cache-")
atexit.register(shutil.rmtree, os.environ["METALFORM_CACHE_DIR"], ignore_errors=True)

pytest_plugins = [
    "tests.fixtures.redfish",
    "tests.fixtures.ipmi",
    "tests.fixtures.forge",
    "tests.fixtures.notify",
    "tests.fixtures.docker",
    "tests.fixtures.postgres",
    "tests.fixtures.maas",
    "tests.fixtures.netbox",
    "tests.fixtures.nova",
]


@pytest.fixture(autouse=True)
def _own_state_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test its own `$XDG_STATE_HOME`: the CLI keeps notification throttle windows
    there, which must neither leak between tests nor land in the user's home."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state-home")))
