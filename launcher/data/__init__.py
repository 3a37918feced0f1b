"""Datasets and loaders: the launcher's own datasets, the `data:` section built into train and validation sets, and resumable per-rank loaders."""
