"""Stopping a run early and cleanly: preemption signals and time limits.

A signal reaches each rank on its own, at its own moment; stopping where it lands would leave
the ranks at different steps, and a checkpoint of no step at all. So a signal only raises this
rank's flag, and about once a second, after an optimizer step, the ranks agree on the flags (one
small all-reduce, which also fixes how many steps until the next one; a single process looks
after every step): if any rank asks, every rank stops at that same step, rank 0 writes a
checkpoint, and training ends with `TrainingStopped`. Where the cluster sends no warning, the
rank that knows the job's end time asks to stop once the time left gets close to what the next
steps, the evaluation and the checkpoint have been measured to take.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch

from launcher.distributed.process_group import all_reduce_sum, is_distributed

log = logging.getLogger("launcher")

# Why a run stops early, in the order the flags travel in the all-reduce.
StopReason = Literal["terminated", "interrupted", "warned", "out of time", "pruned"]
TERMINATED: StopReason = "terminated"  # SIGTERM: kill, or SLURM cancelling, requeueing or preempting the job itself
INTERRUPTED: StopReason = "interrupted"  # SIGINT: Ctrl-C
WARNED: StopReason = "warned"  # SIGUSR1/SIGUSR2: the warning before a time limit or a preemption; requeue the job
OUT_OF_TIME: StopReason = "out of time"  # no warning came, but the time limit is near; requeue the job
# A search's pruner judged this trial, at an evaluation, not worth going on (training/pruning.py):
# it ends as asked, not as a failure.
PRUNED: StopReason = "pruned"
REASONS: tuple[StopReason, ...] = (TERMINATED, INTERRUPTED, WARNED, OUT_OF_TIME, PRUNED)
SIGNALS: dict[signal.Signals, StopReason] = {
    signal.SIGTERM: TERMINATED,
    signal.SIGINT: INTERRUPTED,
    signal.SIGUSR1: WARNED,
    signal.SIGUSR2: WARNED,
}
# How often the ranks compare their flags. An all-reduce after every step costs about 0.3 ms on
# 2 gloo ranks (measured), a few per cent of a short step; a stop that waits up to a second more
# costs nothing.
CHECK_EVERY_S = 1.0


class TrainingStopped(Exception):
    """Training stopped early at a step every rank agreed on; the checkpoint of that step is written."""

    def __init__(self, reasons: set[StopReason], step: int, checkpoint: Any) -> None:
        self.reasons, self.step, self.checkpoint = reasons, step, checkpoint
        super().__init__(f"stopped at step {step} ({', '.join(sorted(reasons))}); checkpoint: {checkpoint}")

    @property
    def wants_requeue(self) -> bool:
        """A warning or the time limit: the job should come back. A SIGTERM alone: SLURM decides."""
        return bool(self.reasons & {WARNED, OUT_OF_TIME})

    @property
    def pruned(self) -> bool:
        """Its search pruned it, and nothing else asked it to stop: the run ends here, with success."""
        return self.reasons == {PRUNED}

    @property
    def exit_code(self) -> int:
        return exit_code(self.reasons)


def exit_code(reasons: set[StopReason]) -> int:
    """The shell's code for the signal that stopped the run: 130 for Ctrl-C, else 143 (SIGTERM)."""
    return 128 + (signal.SIGINT if reasons == {INTERRUPTED} else signal.SIGTERM)


def signal_names(reasons: set[StopReason]) -> str:
    """The signals behind `reasons`, as a person would name them: 'SIGTERM', 'SIGUSR1/SIGUSR2'."""
    names = {reason: "/".join(sig.name for sig, why in SIGNALS.items() if why == reason) for reason in REASONS}
    return " and ".join(names[reason] or reason for reason in REASONS if reason in reasons)


class StopRequests:
    """This rank's reasons to stop, and the step at which all ranks agree to.

    `end_time`: when the job will be killed (a time.time() value), where this rank should watch
    the clock; `margin_s`: time kept spare beyond the measured longest gap between two checks.
    `catching()` turns signals into reasons: SIGTERM, Ctrl-C (SIGINT), and SIGUSR1/SIGUSR2, the
    usual preemption notices.
    """

    def __init__(
        self, device: torch.device, end_time: float | None = None, margin_s: float = 30.0,
        patience_s: float | None = None, second_interrupt_quits: bool = False,
    ) -> None:  # fmt: skip
        self.device, self.end_time, self.margin_s = device, end_time, margin_s
        # A rank that has finished no step for `patience_s` is stuck: a SIGTERM or Ctrl-C then
        # ends it at once, without a checkpoint, instead of waiting for a step that won't come.
        self.patience_s = patience_s
        self._last_progress = time.time()
        # A person pressing Ctrl-C twice means "now". Not in workers: the elastic agent passes on
        # the Ctrl-C that the terminal already sent them.
        self.second_interrupt_quits = second_interrupt_quits
        self.reasons: set[StopReason] = set()
        self._last_check: float | None = None
        self._longest_gap = 0.0  # between two checks: steps, maybe with an evaluation and a checkpoint
        self._steps_to_check = self._next_steps_to_check = 1  # agreed by all ranks at the last check
        self._steps_since_check = 0

    @contextlib.contextmanager
    def catching(self, signals: Sequence[signal.Signals] = tuple(SIGNALS)) -> Iterator[StopRequests]:
        """While inside, `signals` raise this rank's flag instead of their usual effect."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in signals}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: object) -> None:
        reason = SIGNALS[signal.Signals(signum)]
        if reason == INTERRUPTED and reason in self.reasons and self.second_interrupt_quits:
            raise KeyboardInterrupt
        stuck_for = time.time() - self._last_progress
        if reason in (TERMINATED, INTERRUPTED) and self.patience_s is not None and stuck_for > self.patience_s:
            log.error(
                "received %s, but no step has finished for %.0f s: exiting now, without a checkpoint",
                signal.Signals(signum).name,
                stuck_for,
            )
            raise SystemExit(128 + signum)
        if reason not in self.reasons:
            # Only a flag here: the loop is mid-step, maybe mid-collective, and carries on to the step's end.
            log.warning("received %s: stopping at the end of this step, with a checkpoint", signal.Signals(signum).name)
        self.reasons.add(reason)

    def check_at_next_step(self) -> None:
        """Compare the flags after the next step, not at the next periodic check. Every rank calls
        it at the same step: after an evaluation, where a search's pruner may have raised rank 0's
        flag, so that a pruned run stops one step later rather than up to a second of steps later
        (which may be the end of its training)."""
        self._steps_to_check = 1

    def agreed(self) -> set[StopReason]:
        """Every rank calls this after each optimizer step: the reasons any rank has to stop now
        (empty: go on). The ranks compare them every few steps, all at the same steps."""
        now = self._last_progress = time.time()
        self._steps_to_check -= 1
        self._steps_since_check += 1
        if self._steps_to_check > 0:
            return set()
        steps, self._steps_since_check = self._steps_since_check, 0
        if self._last_check is not None:
            self._longest_gap = max(self._longest_gap, now - self._last_check)
            proposal = max(1.0, min(1000.0, CHECK_EVERY_S * steps / max(now - self._last_check, 1e-6)))
        else:
            proposal = 1.0
        self._last_check = now
        if self.end_time is not None and OUT_OF_TIME not in self.reasons:
            # Two of the longest gaps seen: the step under way may end with an evaluation and a save.
            reserve = 2 * self._longest_gap + self.margin_s
            if self.end_time - now < reserve:
                log.warning(
                    "%.0f s left before the time limit, %.0f s needed to stop cleanly: stopping now",
                    self.end_time - now,
                    reserve,
                )
                self.reasons.add(OUT_OF_TIME)
        flags = torch.tensor(
            [float(reason in self.reasons) for reason in REASONS] + [float(int(proposal))], device=self.device
        )
        if is_distributed():
            all_reduce_sum(flags)  # the same sums on every rank: the same reasons, the same next check
            world = torch.distributed.get_world_size()
            self._next_steps_to_check = max(1, int(flags[-1].item()) // world)
        else:
            self._next_steps_to_check = 1  # one process: no collective to save, look after every step
        self._steps_to_check = self._next_steps_to_check
        *counts, _ = flags.tolist()
        return {reason for reason, count in zip(REASONS, counts, strict=True) if count > 0}
