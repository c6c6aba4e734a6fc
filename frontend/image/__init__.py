"""``mx.image`` (alias ``mx.img``): MXNet 1.9.1's image functions, augmenters and iterators.

``image`` holds reading, decoding, resizing, cropping and rotation; ``augmenters`` the
``Augmenter`` classes and ``CreateAugmenter``; ``image_iter`` ``ImageIter``; ``detection``
(alias ``det``) the detection augmenters and ``ImageDetIter``. MXNet defines the augmenters
and ``ImageIter`` in ``mxnet.image.image``, so they are reachable there too.
"""
from . import image
from .image import *
from .image import _get_interp_method
from .augmenters import *
from .image_iter import ImageIter

from . import augmenters as _augmenters
for _name in _augmenters.__all__:
    setattr(image, _name, getattr(_augmenters, _name))
image.ImageIter = ImageIter
del _name

from . import detection
from .det_iter import ImageDetIter
from .detection import *

det = detection
detection.ImageDetIter = ImageDetIter
