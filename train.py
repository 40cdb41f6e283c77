"""Train a model: ``python train.py -c configs/upsample_tiny.yaml [dotted.key=value ...] [--resume RUN_DIR]``.

Thin entry point: parses arguments and calls :func:`volumetric.train.engine.run_training`; prints one
JSON line (run folder, steps, median step time, data-loader share, best validation). Under
``torchrun --nproc_per_node N train.py ...`` each process trains its share (DDP-style gradient
averaging; gloo on CPU, nccl on GPU).
"""

from __future__ import annotations

import sys

from volumetric.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
