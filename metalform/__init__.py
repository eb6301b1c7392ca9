"""Metalform, the application: CLI, server, notifications and lab on top of the engine."""
