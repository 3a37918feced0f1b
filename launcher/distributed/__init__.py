"""Processes and ranks: the runtime of this process, the process group, the elastic agent that starts workers, the worker itself, a stall watchdog."""
