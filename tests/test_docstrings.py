"""The examples in the public docstrings run as written (doctest)."""
from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["transmask", "transmask.masks", "transmask.solvers._sorting", "transmask.diversity"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0


def test_every_public_function_has_an_example():
    import transmask as tm

    for name in ("optimal_mask", "nm_mask", "is_nm", "is_transposable", "kept_l1", "mask_stats", "MaskStats", "available_methods", "tile_kept_l1"):
        doc = getattr(tm, name).__doc__ or ""
        assert ">>> " in doc and "Parameters" in doc or name in ("MaskStats", "available_methods") and ">>> " in doc, name
