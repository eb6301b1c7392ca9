"""Metalform: a declarative GitOps reconciler for bare-metal datacenters."""

__version__ = "0.1.0"
