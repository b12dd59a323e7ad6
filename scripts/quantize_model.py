#!/usr/bin/env python3
"""Quantize a float model (Keras, SavedModel or float .tflite) into a full-integer model
directory edge runs: the same tool as ``edge quantize``. Run ``--help`` for the options."""

from __future__ import annotations

import sys
from pathlib import Path

# Runnable from a source checkout without installing edge.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.quantize import main

if __name__ == "__main__":
    sys.exit(main())
