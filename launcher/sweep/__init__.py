"""Sweeps: a grid of recipe overrides planned into runs, run here or as a SLURM array, and their results ranked."""
