"""sslviz dashboard entry point: `streamlit run app.py`.

Routes between the pages and opens the run store once (``$SSLVIZ_STORE`` or
``~/.sslviz/runs.db``); the pages are thin layouts over ``sslviz``.
"""
import streamlit as st

from sslviz import ui

st.set_page_config(page_title="sslviz", page_icon=":material/balance:", layout="wide")

pages = [
    st.Page(ui.PAGES["setup"], title="Setup", icon=":material/tune:", default=True),
    st.Page(ui.PAGES["live"], title="Live run", icon=":material/monitoring:"),
    st.Page(ui.PAGES["compare"], title="Compare runs", icon=":material/compare_arrows:"),
    st.Page(ui.PAGES["data"], title="Data", icon=":material/dataset:"),
    st.Page(ui.PAGES["teaching"], title="Teaching (toy 2-D)", icon=":material/school:"),
]
pg = st.navigation(pages)
ui.get_store()  # fail early, with the store's own message, if it cannot be opened
st.sidebar.caption(f"Run store: `{ui.store_path()}`")
pg.run()
