"""gruunet: GRUU-Net cell segmentation for Cell Tracking Challenge sequences."""

import os

__version__ = "0.1.0"

# Ask torch to back tensors of 2 MiB and more with huge pages (read once, when torch first
# allocates, so it must be set before torch is imported). Every large activation is a fresh
# allocation whose 4 KiB pages the kernel faults in and zeroes one by one; with 2 MiB pages the
# GRUU-Net forward pass on a 1024² image took 23 s/MP instead of 33 s/MP, at the same peak
# memory (`gruunet bench segment`). A value the user set is kept.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
