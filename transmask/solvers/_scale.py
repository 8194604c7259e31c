r"""Tiles are solved at a fixed scale, so masks do not depend on the scale of W.

Multiplying a tile by a power of two :math:`2^k` is exact for every entry
that stays a normal number, and IEEE rounding commutes with it: ``(2^k a) +
(2^k b)`` is ``2^k (a + b)`` bit for bit, and so are comparisons, halvings and
float32 conversions, as long as nothing overflows to infinity or drops into
the subnormals. A solver that only adds, compares and halves therefore gives
the same mask for ``W`` and ``2^k W``, unless an intermediate leaves the
normal range. Two places did (issue 18, #9):

* sums of a tile's magnitudes overflow for entries near ``float64``'s
  largest value (``1.8e308``): the exact 2:4 pattern search kept 5-27 % less
  than the optimum there, and the shortest-path distances and the
  approximation's fill gains could overflow the same way;
* the exact solver's dual prices run in float32 lanes, which overflow above
  ``3.4e38`` and lose precision below ``1.2e-38``; such tiles started from a
  different warm start, which can pick a different mask among equal optima.

So every tile whose largest magnitude ``top`` lies outside ``[2^-64, 2^64)``
is solved as ``tile * 2^-e``, with ``2^e <= top < 2^(e+1)``: its largest entry
becomes ``[1, 2)``, sums of up to ``2^900`` entries cannot overflow, and the
float32 lanes hold every entry down to ``2^-60`` of the top as a normal
number. Tiles inside the band are left as they are (no cost, and their masks
are unchanged). A tile and its power-of-two rescaling end up at the same
scale, hence with the same mask; the guarantee:

    ``optimal_mask(W * 2**k) == optimal_mask(W)`` for every method, ``keep``
    and ``m``, whenever ``W`` and ``W * 2**k`` hold only normal numbers and
    zeros, and the nonzero magnitudes of each tile lie within ``2^60`` of its
    largest (the float32 lanes' range; the float64 paths need no such bound).

Zeros stay zeros; a tile whose largest entry is subnormal is scaled up by
``2^1000`` at most (it has no normal counterpart to agree with).
"""
from __future__ import annotations

import math

import numba as nb

BAND_LOW = 2.0**-64  # tiles whose largest magnitude is inside [BAND_LOW, BAND_HIGH) are solved as they are
BAND_HIGH = 2.0**64


@nb.njit(cache=True, nogil=True, inline="always")
def tile_scale(top):
    """The power of two to multiply a tile by, given its largest magnitude ``top`` (see the module docstring).

    1.0 when ``top`` is 0 or inside ``[2^-64, 2^64)``; otherwise ``2^-e`` with
    ``top * 2^-e`` in ``[1, 2)`` (at most ``2^1000`` for a subnormal ``top``).
    """
    if top == 0.0 or (top >= BAND_LOW and top < BAND_HIGH):
        return 1.0
    _, e = math.frexp(top)  # top = f * 2^e with 0.5 <= f < 1
    return math.ldexp(1.0, min(1 - e, 1000))


@nb.njit(cache=True, nogil=True, inline="always")
def exponent_scale(e):
    """:func:`tile_scale` for a tile whose largest magnitude has the binary exponent ``e`` (``2^e <= top < 2^(e+1)``)."""
    if e >= -64 and e < 64:
        return 1.0
    return math.ldexp(1.0, min(-e, 1000))
