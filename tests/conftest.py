"""Test-wide fixtures. Peers (emulated BMCs, ...) live in tests/fixtures/, one module each."""

pytest_plugins = [
    "tests.fixtures.redfish",
    "tests.fixtures.ipmi",
    "tests.fixtures.forge",
    "tests.fixtures.notify",
    "tests.fixtures.docker",
    "tests.fixtures.postgres",
    "tests.fixtures.maas",
]
