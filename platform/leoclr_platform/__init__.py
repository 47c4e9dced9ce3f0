"""leoclr-platform: Ray-distributed sweeps, tracking and evaluation for LeOCLR / MoCo-v2."""

__version__ = "0.1.0"
