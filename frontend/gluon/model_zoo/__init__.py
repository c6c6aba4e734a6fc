"""``ember.gluon.model_zoo``: MXNet 1.9.1's predefined networks (``vision``).

Architectures only: ember never downloads. ``pretrained=True`` loads the MXNet model-zoo
file from a local folder (see :mod:`.model_store`).
"""
from . import model_store, vision  # noqa: F401
