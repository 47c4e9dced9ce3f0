"""leoclr-platform: Ray-distributed sweeps, tracking and evaluation for LeOCLR / MoCo-v2.

Packages by role: spaces (search-space files), sweep (Ray Tune runs), tracking (MLflow),
registry (promote), evaluation (evaluate), report (ablation reports); cli is the `leoclr`
command over them. docs/design.md draws how they fit together and with the engine.
"""

__version__ = "0.1.0"
