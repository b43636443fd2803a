"""gruunet: GRUU-Net cell segmentation for Cell Tracking Challenge sequences."""

__version__ = "0.1.0"
