"""``ember.optimizer``: MXNet's optimizers, registry (``create``) and ``Updater``."""
from . import adam, others, sgd  # noqa: F401  (registers the optimizers)
from .adam import FTML, LAMB, Adam, Adamax, AdamW, Nadam
from .optimizer import Optimizer, Updater, create, get_updater, register
from .others import AdaDelta, AdaGrad, Ftrl, RMSProp, Test
from .sgd import DCASGD, NAG, SGD, SGLD, Signum, ccSGD

__all__ = ["AdaDelta", "AdaGrad", "Adam", "AdamW", "Adamax", "DCASGD", "FTML", "Ftrl", "LAMB",
           "NAG", "Nadam", "Optimizer", "RMSProp", "SGD", "SGLD", "Signum", "Test", "Updater",
           "ccSGD", "create", "get_updater", "register"]
