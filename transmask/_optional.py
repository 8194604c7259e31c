"""Lazy import of optional dependencies with an install hint when missing."""
from __future__ import annotations

import importlib
from types import ModuleType

# module name -> (pip requirement, transmask extra that brings it)
_HINTS = {
    "pulp": ("pulp", "lp"),
    "torch": ("torch", "torch"),
    "triton": ("triton", "triton"),
    "tqdm": ("tqdm", "torch"),
    "safetensors": ("safetensors", "io"),
    "matplotlib": ("matplotlib", "plots"),
    "ortools": ("ortools", "bench"),
    "networkx": ("networkx", "bench"),
    "scipy": ("scipy", "bench"),
}


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` or raise ImportError saying how to install it.

    Parameters
    ----------
    module : str
        Importable module name, e.g. ``"pulp"``.
    feature : str
        What the caller wanted to do, used in the message (e.g. ``'method="lp"'``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised by monkeypatching in tests
        req, extra = _HINTS.get(module, (module, None))
        hint = f"pip install {req}"
        if extra:
            hint += f"  (or: pip install 'transmask[{extra}]')"
        raise ImportError(f"{feature} needs the optional dependency {module!r}, which is not installed; {hint}") from exc
