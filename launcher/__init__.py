"""launcher: one YAML recipe, trained on a laptop CPU, a multi-GPU machine or a SLURM cluster."""

__version__ = "0.1.0"
