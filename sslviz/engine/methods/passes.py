"""Methods that re-estimate from the whole unlabeled set, in pipeline order.

SAW re-weights the losses from the model's predictions after each of its epochs; DARP refines the pseudo-labels it keeps for every unlabeled
sample. Adsh, also once an epoch, is a threshold schedule (``threshold_schedule: adsh``) and joins the registry through
``THRESHOLD_SCHEDULES`` instead.
"""
from .darp import DARP
from .saw import SAW

PASS_METHODS: tuple = (DARP, SAW)
