"""One run's training: setup, the loop as named steps, evaluation, optimizer and schedule, stopping on signals, and inference from a checkpoint."""
