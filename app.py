"""sslviz dashboard entry point: `streamlit run app.py`.

Routes between the pages and opens the run store once (``$SSLVIZ_STORE`` or
``~/.sslviz/runs.db``); the pages are thin layouts over ``sslviz``. The navigation
and the page title come first, before the engine (torch, sklearn) is imported.
"""
import streamlit as st

from sslviz.dashboard import router  # Streamlit only: the first paint does not wait for torch

# No icon on the pages themselves: Streamlit makes a page's Material icon the tab's favicon, fetched from
# fonts.gstatic.com (a call out of a local tool); router.sidebar draws the icons from the bundled font instead.
pages = {
    "setup": st.Page(router.PAGES["setup"], title="Setup", default=True),
    "live": st.Page(router.PAGES["live"], title="Live run"),
    "compare": st.Page(router.PAGES["compare"], title="Compare runs"),
    "sweep": st.Page(router.PAGES["sweep"], title="Sweeps"),
    "data": st.Page(router.PAGES["data"], title="Data"),
    "teaching": st.Page(router.PAGES["teaching"], title="Teaching (toy 2-D)"),
}
pg = st.navigation(list(pages.values()))  # Streamlit's own menu is hidden (.streamlit/config.toml)
st.set_page_config(page_title=router.page_title(pg.title), page_icon=router.FAVICON, layout="wide")
router.sidebar(pages)

from sslviz.dashboard import ui  # noqa: E402  (seconds on a cold server: after the first paint)

ui.get_store()  # fail early, with the store's own message, if it cannot be opened
st.sidebar.caption(f"Run store: `{ui.store_path()}`")
try:
    router.run(pg)
finally:  # also when the page stops or switches (st.stop, st.switch_page raise)
    ui.import_in_background()  # pandas and pyarrow, after the page is drawn
