"""Methods that re-estimate from the whole unlabeled set, in pipeline order.

SAW re-weights the losses from the pass's predictions; DARP refines the pseudo-labels it keeps for every unlabeled
sample. Adsh, also once a pass, is a threshold schedule (``threshold_schedule: adsh``) and joins the registry through
``THRESHOLD_SCHEDULES`` instead.
"""
from .darp import DARP
from .saw import SAW

PASS_METHODS: tuple = (DARP, SAW)
