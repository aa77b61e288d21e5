"""Former home of checkpoint I/O; kept so that ``from dinat_backbone.checkpoints import X``
keeps working. The code lives in :mod:`dinat_backbone.weights` (safe reading, conversion,
loading); new code should import from there."""
from .weights import *  # noqa: F401,F403
from .weights import __all__  # noqa: F401
from .weights.loading import CONFIG_FIELDS as _CONFIG_FIELDS  # noqa: F401  (old private name)
