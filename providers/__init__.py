"""Providers: the edge of Metalform where it talks to live systems."""
