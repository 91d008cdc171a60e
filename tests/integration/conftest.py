"""Whole-stack tests: their shared helper modules (stack_helpers, torture_helpers) import by
name under ``--import-mode=importlib``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
