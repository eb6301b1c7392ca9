"""The GitOps server: configuration, repository tracking, workers, drift loop, webhook flow.

`metalform.api` holds the HTTP layer (Falcon resources); this package holds what runs behind
it and the `serve` / `status` commands.
"""
