"""Slot accounting: which trial fills which of a study's ``n_trials`` slots.

The study is made of ``n_trials`` *slots*, one per configuration to evaluate,
each identified by its *origin*, the number of the trial that first asked for
it:

* a trial asked fresh from the sampler is admitted if fewer than ``n_trials``
  live slots have lower numbers (a slot is live unless its trial was skipped
  or ended in an evaluation error); otherwise it is *skipped* (FAIL, user
  attribute ``skipped``, never evaluated): workers racing at the end of a study
  never overshoot ``n_trials``;
* a slot whose trial ended without a result because its worker died (FAIL by
  recovery, see :mod:`bioplaus.study.liveness`) is *orphaned*; any worker
  re-queues its configuration (``enqueue_trial``) with user attribute
  ``origin``; the copy re-uses the origin's seed. If two workers re-queue the
  same orphan, the copy with the higher number is skipped: each slot ends with
  exactly one COMPLETE trial.

So the study ends with exactly ``n_trials`` COMPLETE trials, one per slot.
When no worker died and no evaluation failed, the slots are trials
``0 … n_trials-1``; otherwise re-queued copies and replacements take later
numbers. :func:`plan_slots` reads the slots off the stored trials (a pure
function); :func:`requeue_orphans` and the skip rules act on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import optuna
from optuna.trial import FrozenTrial, TrialState

from bioplaus.study._log import log as _log


def _origin(t: FrozenTrial) -> int:
    return int(t.user_attrs.get("origin", t.number))


def trial_kind(t: FrozenTrial) -> str:
    """``complete``, ``running``, ``waiting``, ``skipped`` (never evaluated),
    ``error`` (evaluation failed) or ``died`` (its worker stopped before telling)."""
    if t.state == TrialState.COMPLETE:
        return "complete"
    if t.state == TrialState.RUNNING:
        return "running"
    if t.state == TrialState.WAITING:
        return "waiting"
    if t.user_attrs.get("skipped"):
        return "skipped"
    if t.user_attrs.get("error"):
        return "error"
    return "died"


@dataclass
class SlotPlan:
    """The study's state seen as slots (see the module docstring).

    ``slots``: origins of the live slots, ascending (at most ``n_trials``);
    ``complete``: number of COMPLETE trials; ``done``: slots with a COMPLETE
    trial; ``orphans``: slots with no COMPLETE, RUNNING or WAITING trial
    (their worker died), mapped to the parameters to re-queue;
    ``waiting``: WAITING trials that may still run."""

    slots: list[int]
    complete: int
    done: set[int]
    orphans: dict[int, dict[str, Any]]
    waiting: int


def plan_slots(trials: Iterable[FrozenTrial], n_trials: int) -> SlotPlan:
    """Slots of a study from its trials (a pure function of the stored state)."""
    trials = sorted(trials, key=lambda t: t.number)
    by_origin: dict[int, list[FrozenTrial]] = {}
    for t in trials:
        by_origin.setdefault(_origin(t), []).append(t)
    slots: list[int] = []
    for t in trials:
        if _origin(t) != t.number:  # a re-queued copy, not a slot of its own
            continue
        kinds = {trial_kind(c) for c in by_origin[t.number]}
        if trial_kind(t) == "skipped" or ("error" in kinds and "complete" not in kinds):
            continue
        if len(slots) < n_trials:
            slots.append(t.number)
    done = {o for o in slots if any(trial_kind(c) == "complete" for c in by_origin[o])}
    orphans = {}
    for o in slots:
        kinds = [trial_kind(c) for c in by_origin[o]]
        if not any(k in ("complete", "running", "waiting") for k in kinds):
            params = next((dict(c.params) for c in reversed(by_origin[o]) if c.params), {})
            orphans[o] = params
    waiting = sum(1 for t in trials
                  if trial_kind(t) == "waiting" and _origin(t) in slots and _origin(t) not in done)
    return SlotPlan(slots=slots, complete=sum(trial_kind(t) == "complete" for t in trials), done=done,
                    orphans=orphans, waiting=waiting)


def skip_reason(trial_number: int, origin: int, trials: list[FrozenTrial], n_trials: int) -> str | None:
    """Why the trial just asked must not be evaluated, or None to evaluate it."""
    plan = plan_slots(trials, n_trials)
    if origin == trial_number:
        if trial_number not in plan.slots:
            return f"surplus: {n_trials} slots are filled by trials with lower numbers"
        return None
    if origin not in plan.slots:
        return f"re-queued copy of trial {origin}, which is no longer a slot"
    if origin in plan.done:
        return f"re-queued copy of trial {origin}, which is already complete"
    for t in trials:
        if t.number != trial_number and _origin(t) == origin and t.number < trial_number \
                and trial_kind(t) in ("running", "waiting"):
            return f"re-queued copy of trial {origin}, which trial {t.number} runs"
    return None


def requeue_orphans(study: optuna.Study, n_trials: int, trials: list[FrozenTrial] | None = None) -> list[int]:
    """Re-queue the configuration of every slot whose worker died; return their origins."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    plan = plan_slots(trials, n_trials)
    for origin, params in plan.orphans.items():
        study.enqueue_trial(params, user_attrs={"origin": origin}, skip_if_exists=False)
        _log(f"[{study.study_name}] slot {origin}: configuration re-queued (its worker died)")
    return sorted(plan.orphans)


def concurrent_duplicate(trial_number: int, params: Mapping[str, Any], trials: list[FrozenTrial],
                         known_complete: set[int]) -> int | None:
    """Number of a trial with the same parameters that this trial's sampler could not see, or None."""
    for t in trials:
        if t.number == trial_number:
            continue
        if t.state == TrialState.RUNNING or (t.state == TrialState.COMPLETE and t.number not in known_complete):
            if t.params and dict(t.params) == dict(params):
                return t.number
    return None


def skip(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """End the asked ``trial`` unevaluated: FAIL with user attribute ``skipped`` = ``reason``."""
    study._storage.set_trial_user_attr(trial._trial_id, "skipped", reason)
    study.tell(trial, state=TrialState.FAIL)
