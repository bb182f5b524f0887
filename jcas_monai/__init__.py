"""JCAS: Joint Class-Affinity Loss Correction for robust medical image segmentation with noisy labels, as MONAI components."""

__version__ = "0.1.0"
