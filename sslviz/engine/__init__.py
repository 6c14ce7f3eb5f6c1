"""The engine: data, splits, augmentation, models, techniques and the trainer.

Runs a model without a store, a worker or a page: ``trainer.train(config, on_log=print)``. Imports nothing
from ``sslviz.runs`` or ``sslviz.dashboard`` (tests/test_architecture.py). A new technique goes here: its
declaration in ``registry.py`` (FixMatch's own mitigations) or ``methods/`` (a paper's method), its formulas in
``techniques.py``.
"""
