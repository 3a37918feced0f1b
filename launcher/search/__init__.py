"""Hyperparameter search with Optuna: a space sampled trial by trial, each an ordinary run, pruned early where its study says."""
