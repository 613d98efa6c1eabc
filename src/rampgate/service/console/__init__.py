"""The operator console: one page at ``/console`` that shows and steers the rollout.

``rampgate serve`` serves the page. Its scripts call the admin API with
the session cookie set at sign-in, and send the CSRF token on every change.
"""

from rampgate.service.console.routes import router

__all__ = ["router"]
