from .sparsify import *  # noqa
from .data import *  # noqa
from .adaprune import *  # noqa
