"""The one-line notice while Numba compiles transmask's kernels for the first time (issue 12 #2)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from transmask import masks

CODE = "import numpy as np, transmask as tm; tm.nm_mask(np.ones((8, 8), np.float32), 2, 4); print('done')"


def test_notice_on_stderr_only_when_the_kernels_compile(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))  # an empty cache: a cold first run
    runs = [subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=300) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert run.stdout == "done\n"  # never on stdout
    cold, warm = runs[0].stderr.splitlines(), runs[1].stderr
    assert cold == ["transmask: compiling the row-wise N:M kernels for float32 once (about 6 s); later runs load them from the cache"]
    assert "transmask:" not in warm  # loaded from the cache: silent


def test_the_notice_names_what_will_compile():
    W = np.ones((8, 8))
    assert masks._kernels_to_compile("exact", "exactly", 4, W)[0] == "exact solver's pattern-search kernels"
    assert masks._kernels_to_compile("exact", "exactly", 4, np.ones((9, 8)))[0] == "exact solver's pattern-search and min-cost-flow kernels"
    assert masks._kernels_to_compile("exact", "at_most", 4, W)[0] == "exact solver's min-cost-flow kernels"
    assert masks._kernels_to_compile("exact", "exactly", 8, W)[0] == "exact solver's min-cost-flow kernels"
    assert masks._kernels_to_compile("approx", "exactly", 4, W)[0] == "approximation's kernels"
    assert masks._kernels_to_compile("exact", "exactly", 4, np.ones(3))[0] == "exact solver's kernels"  # refused later
