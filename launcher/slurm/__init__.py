"""SLURM through submitit: resources checked before submitting, submission, the job's task (signals, requeue), status, logs and cancel."""
