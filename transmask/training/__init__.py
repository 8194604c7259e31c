"""PyTorch integration: train with (transposable) N:M masks, and AdaPrune.

Needs the optional dependency torch (``pip install 'transmask[torch]'``, which
also brings tqdm for progress bars).

Sparse training (:mod:`.sparsify`)::

    import transmask.training as tt
    ctl = tt.sparsify(model, 4, 8, transposable=True, update_every=40)  # exact masks
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ctl.attach(opt)             # masks are recomputed every 40 optimizer steps
    ...                         # ordinary training loop
    ctl.freeze()                # fix masks, zero pruned weights
    print(ctl.summary(as_text=True))
    plain = ctl.export()        # nn.Linear/nn.Conv2d with zeros where pruned

Post-training conversion (:mod:`.adaprune`)::

    res = tt.adaprune(model, x_calib, 2, 4, fit="adam", steps=1000)  # or fit="lstsq"
    print(res.summary())
    pruned = res.model

Conventions: ``n`` is the number *kept* of every ``m``. Conv2d masks live on the
channels-last 2-D view ``(out_channels, kh*kw*in_channels)`` (see
:mod:`transmask.views`). Small data/model helpers for examples and
tests (scikit-learn's digits; no download) are in :mod:`transmask.training.data`.

Note: the attributes ``transmask.training.sparsify`` and
``transmask.training.adaprune`` are the *functions*; import the modules'
other names from them directly (``from transmask.training.adaprune import ...``).
"""
from __future__ import annotations

from . import data
from ..views import view_shape, view_to_weight, weight_to_2d
from .adaprune import *  # noqa: F403 -- the names of adaprune.__all__
from .adaprune import __all__ as _adaprune_names
from .sparsify import *  # noqa: F403 -- the names of sparsify.__all__
from .sparsify import __all__ as _sparsify_names

__all__ = [*_sparsify_names, *_adaprune_names, "weight_to_2d", "view_to_weight", "view_shape"]
