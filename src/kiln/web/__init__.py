"""The web pages (plain HTML, CSS and ES modules in ``static/``; no build step) and the small
``web`` app that feeds them what the other APIs do not: demo sample cases and engine summaries."""

from __future__ import annotations

from pathlib import Path

PAGES = ("index", "authenticate", "cases", "packaging", "ops")


def pages_dir() -> Path:
    """The folder ``kiln serve`` serves at ``/`` (``/authenticate`` is ``authenticate.html``)."""
    return Path(__file__).parent / "static"
