"""The app's navigation, drawn before anything heavy is imported; the read-only setting.

Imports Streamlit only (no torch, no sklearn), so ``app.py`` can draw the sidebar links and set the
page title in the first milliseconds of a run, and every page can check it runs under ``app.py`` first.

Why pages check: Streamlit treats an entry script with a ``pages/`` folder beside it as an old-style
(v1) multipage app until some session calls ``st.navigation``. On a freshly started server, the first
request of ``/live?run=3`` therefore runs ``pages/live.py`` on its own, under Streamlit's file-based
menu. ``require_router()`` sees that (no ``app.py`` around it in this run) and runs ``app.py`` right
there: its ``st.navigation`` call switches the old mode off for good (documented: ``pages/`` is ignored
once ``st.navigation`` is called), draws our navigation and runs the requested page through the router.
No Streamlit internal is touched; ``client.showSidebarNavigation = false`` (``.streamlit/config.toml``)
hides Streamlit's automatic menu in both modes, and ``sidebar()`` draws the app's own links.
"""
from __future__ import annotations

import runpy
import threading
from pathlib import Path

import streamlit as st

from ..engine.access import READ_ONLY_ENV, read_only  # noqa: F401  (the pages' router.read_only)

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app.py"
PAGES = {
    "setup": "pages/setup.py",
    "live": "pages/live.py",
    "compare": "pages/compare.py",
    "sweep": "pages/sweep.py",
    "data": "pages/data.py",
    "teaching": "pages/teaching.py",
}
# Drawn from the Material Symbols font Streamlit bundles (no request leaves the machine).
ICONS = {
    "setup": ":material/tune:",
    "live": ":material/monitoring:",
    "compare": ":material/compare_arrows:",
    "sweep": ":material/grid_on:",
    "data": ":material/dataset:",
    "teaching": ":material/school:",
}
# An emoji favicon is drawn in the browser (an inline SVG); a Material one would be fetched from fonts.gstatic.com.
FAVICON = "⚖️"
APP_TITLE = "sslviz"
READ_ONLY_NOTE = ":material/visibility: read-only: viewing only"

_routing = threading.local()  # .active: app.py is running a page in this thread (this script run)


def page_title(title: str) -> str:
    """The browser tab's title of a page: 'Live run · sslviz'."""
    return f"{title} · {APP_TITLE}"


def sidebar(pages: dict) -> None:
    """The app's own navigation: one link per page (``pages``: key of :data:`PAGES` -> ``st.Page``) with its
    icon, and the read-only note when it applies."""
    with st.sidebar:
        for key, page in pages.items():
            st.page_link(page, icon=ICONS[key])
        if read_only():
            st.caption(READ_ONLY_NOTE)


def run(page) -> None:
    """Run the page ``st.navigation`` picked, marked as routed for ``require_router``."""
    _routing.active = True
    try:
        page.run()
    finally:
        _routing.active = False


def routed() -> bool:
    """True inside a page that ``app.py`` runs."""
    return getattr(_routing, "active", False)


def require_router() -> None:
    """First line of every page: outside ``app.py`` (a fresh server's first deep link), run ``app.py`` here.

    ``app.py`` then draws the navigation, sets the title and runs this same page through ``run``; this
    outer copy stops once it returns.
    """
    if routed():
        return
    runpy.run_path(str(APP), run_name="__main__")
    st.stop()
