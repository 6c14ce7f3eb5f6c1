"""The dashboard: Streamlit glue (router, store and dataset caches, form state, pickers), charts and reports.

The only room that imports Streamlit; it imports the run system and the engine. A new page goes in ``pages/``
(thin: layout and widgets) and in ``router.PAGES``; its figures go in ``charts.py`` as ``make_*_figure``.
"""
