"""Train a StarGAN-style translator: ``python train.py [--config FILE ...] [--set key=value ...]``."""

import sys

from gan.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
