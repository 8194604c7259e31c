"""One-shot (transposable) N:M pruning of pretrained causal language models.

Needs torch and, for real models, ``transformers`` (``pip install 'transmask[llm]'``).
"""
from __future__ import annotations

from .models import load_causal_lm, smollm2_gguf_path

__all__ = ["load_causal_lm", "smollm2_gguf_path"]
