"""Test-wide fixtures. Peers (emulated BMCs, ...) live in tests/fixtures/, one module each."""

import os

# Fingerprints need a key; tests must not create one in the user's home.
os.environ.setdefault("METALFORM_FINGERPRINT_KEY", "metalform-tests")

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
