"""Methods with a head of their own on the backbone's features, in pipeline order."""
from .abc_head import ABC
from .acr import ACR

HEAD_METHODS: tuple = (ABC, ACR)
