"""The imbalanced-SSL methods papers compare against (ABC, ACR, SAW, Adsh, DARP), one module each.

They are techniques like FixMatch's own mitigations (``engine/technique.py``) and join ``registry.TECHNIQUES``
after them. ``heads.HEAD_METHODS`` own heads on the backbone's features; ``passes.PASS_METHODS`` re-estimate
something from the whole unlabeled set on their own clock (an epoch of steps, or every few steps).
"""
from .heads import HEAD_METHODS
from .passes import PASS_METHODS

METHODS = (*PASS_METHODS, *HEAD_METHODS)
