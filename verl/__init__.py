"""verl-style Ray RL framework for vision-language models (TTRV and SOPHIA recipes).

Installing this package replaces an upstream `verl` in the same environment. Importing it has no side
effects: the torchvision compat shim (:mod:`verl.utils.torchvision_compat`) is applied where a model,
processor or vLLM engine is built.
"""

__version__ = "0.1.0"
