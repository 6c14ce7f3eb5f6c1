"""The imbalanced-SSL methods papers compare against (ABC, ACR, SAW, Adsh, DARP), one module each.

They are techniques like FixMatch's own mitigations (``sslviz.technique``) and join ``registry.TECHNIQUES``
after them. ``heads.HEAD_METHODS`` own heads on the backbone's features; ``passes.PASS_METHODS`` re-estimate
something from the model's predictions on the whole unlabeled set once a pass.
"""
from .heads import HEAD_METHODS
from .passes import PASS_METHODS

METHODS = (*PASS_METHODS, *HEAD_METHODS)
