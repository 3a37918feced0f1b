"""The `launch` command: one module for each of its commands, and its parser."""
