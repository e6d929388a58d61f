"""The toy lab's world, which lives in `mof_llava.scenes.lab` (one scene generator for the lab, the
demo and the benchmark folders); this module keeps `from mof_llava.lab import world` working."""

from ..scenes.lab import *  # noqa: F403
from ..scenes.lab import __all__  # noqa: F401
