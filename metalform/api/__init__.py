"""The HTTP layer of `metalform serve`: Falcon resources, thin (parse, call, render).

`create_app(config, engine, store)` builds the WSGI app; the work behind it lives in
`metalform.server`.
"""

from metalform.api.app import MetalformApp, create_app

__all__ = ["MetalformApp", "create_app"]
