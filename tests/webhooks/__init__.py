"""Tests of the webhooks package: verify, parse, and report back to the forge."""
