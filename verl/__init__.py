"""verl-style Ray RL framework for vision-language models (TTRV and SOPHIA recipes).

Installing this package replaces an upstream `verl` in the same environment.
"""

from verl.utils.torchvision_compat import ensure_torchvision_importable as _ensure_tv

# Must run before transformers / vLLM first import torchvision (see the module's docstring).
_ensure_tv()

__version__ = "0.1.0"
