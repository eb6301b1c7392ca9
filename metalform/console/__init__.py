"""The web console: server-rendered pages at `/` of `metalform serve`.

Pages are Jinja2 templates (`templates/`), styles and a little JavaScript are static files
(`static/`), all packaged: nothing comes from a CDN. People sign in with an API token; the
session is a random id in an HttpOnly, SameSite=Strict cookie, kept in memory here, so the
token never reaches a page, a URL or a cookie. See `routes.py` for what is served.
"""

from metalform.console.routes import console_routes
from metalform.console.sessions import Sessions

__all__ = ["Sessions", "console_routes"]
