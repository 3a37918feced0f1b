"""A library that takes about 2 s of CPU to import, as transformers or a large in-house package
does (its modules compiled, its registries built): what W5's user code imports beside
scikit-learn. The work is real CPU work, so that processes importing it at once share the cores
as they would."""

from __future__ import annotations

import hashlib
import time

IMPORT_CPU_S = 2.0


def _build_registry(seconds: float) -> int:
    """Hash until `seconds` of this process's CPU time have gone by; how many rounds it took."""
    started, rounds, digest = time.process_time(), 0, b"registry"
    while time.process_time() - started < seconds:
        for _ in range(1000):
            digest = hashlib.sha256(digest).digest()
        rounds += 1
    return rounds


ROUNDS = _build_registry(IMPORT_CPU_S)
