"""Evaluate or apply a trained model: ``python evaluate.py <command> ...`` (see --help)."""

import sys

from gan.cli import evaluate_main

if __name__ == "__main__":
    sys.exit(evaluate_main())
