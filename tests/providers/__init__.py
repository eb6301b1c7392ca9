"""Provider tests against real peers on loopback."""
