"""Slot accounting: which trials fill a study's ``n_trials`` slots, and when a study must stop.

A study ends with ``n_trials`` *valid* COMPLETE trials (not ``invalid``),
one per *slot*. Every trial asked fresh from the sampler is a *draw*; draws
are numbered ``0, 1, 2, …`` in trial-number order, and a draw's seeds (the
sampler's, the model's) derive from its draw index alone (see
:func:`draw_index` and :mod:`bioplaus.study.seeds`). A draw's *origin* is the
number of its fresh trial; copies of it (re-queued with ``enqueue_trial``,
user attribute ``origin``) re-use its parameters and seeds. The slots are the
first ``n_trials`` draws, in order, that are not *retired*:

* a draw is retired when it ended ``invalid`` (the configuration cannot be
  run: stored, told to the optimiser with its penalty, shown in
  ``trials.csv``, but it does not count), ``censored`` (the time limit cut
  its training short: its partial accuracy is kept and told to the
  optimiser, but it measures the budget, so another draw takes its slot),
  with an evaluation ``error``, when
  its worker died on it ``max_retries`` times, or when it was skipped as a
  concurrent duplicate (``gp``/``tpe``);
* a draw that is a slot but has no result, no running and no queued copy
  (*orphan*: its worker died, or it was asked as a surplus while lower draws
  still ran and was skipped unevaluated) is re-queued by any worker
  (:func:`requeue_orphans`); the copy evaluates the same configuration with
  the same seed;
* a trial asked whose draw is not among the slots is *skipped* (FAIL, user
  attribute ``skipped``, never evaluated): workers racing at the end of a
  study never overshoot ``n_trials``. Such a draw is not lost: if a lower
  draw is retired later, it becomes a slot and is re-queued.

So whatever the number of workers, the kills and the resumes, a study ends
with the first ``n_trials`` valid draws; with the ``random`` sampler (a
draw's configuration is a function of the study seed and its draw index)
these are the same configurations, with the same seeds and values, as an
uninterrupted single-worker run. :func:`plan_slots` reads all this off the
stored trials (a pure function); :func:`stop_reason` says when a study must
stop because its space yields no valid point or its model keeps failing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import optuna
from optuna.trial import FrozenTrial, TrialState

from bioplaus.study._log import log as _log

#: a configuration whose worker died on it this many times is retired (re-run at most this many - 1 times)
MAX_RETRIES = 3
#: evaluated draws in a row that are invalid (or failed) after which a study stops
MAX_CONSECUTIVE_INVALID = 50


def _origin(t: FrozenTrial) -> int:
    return int(t.user_attrs.get("origin", t.number))


def is_fresh(t: FrozenTrial) -> bool:
    """True for a trial asked fresh from the sampler (a draw), False for a re-queued copy."""
    return _origin(t) == t.number


def draw_index(trials: Iterable[FrozenTrial], origin: int) -> int:
    """The draw index of the fresh trial ``origin``: how many fresh trials have lower numbers.

    Copies take trial numbers too (they are created when re-queued), so a
    draw's index, not its trial number, is what stays the same between a
    killed-and-resumed run and an uninterrupted one."""
    return sum(1 for t in trials if t.number < origin and is_fresh(t))


def trial_kind(t: FrozenTrial) -> str:
    """``complete`` (valid), ``invalid``, ``censored`` (cut short by the time limit), ``running``, ``waiting``, ``skipped`` (never
    evaluated), ``duplicate`` (skipped: a concurrent duplicate), ``error`` (evaluation
    failed) or ``died`` (its worker stopped before telling)."""
    if t.state == TrialState.COMPLETE:
        if t.user_attrs.get("invalid"):
            return "invalid"
        if t.user_attrs.get("censored", t.user_attrs.get("timed_out")):  # timed_out: older storages
            return "censored"
        return "complete"
    if t.state == TrialState.RUNNING:
        return "running"
    if t.state == TrialState.WAITING:
        return "waiting"
    if t.user_attrs.get("skipped"):
        return "duplicate" if t.user_attrs.get("duplicate") else "skipped"
    if t.user_attrs.get("error"):
        return "error"
    return "died"


def draw_outcome(kinds: list[str], max_retries: int = MAX_RETRIES) -> str:
    """What became of a draw from the kinds of its trials (fresh one and copies):
    ``valid``, ``invalid``, ``censored``, ``error``, ``gave_up`` (its worker died ``max_retries``
    times), ``duplicate``, ``pending`` (running or queued) or ``unevaluated``."""
    if "complete" in kinds:
        return "valid"
    if "invalid" in kinds:
        return "invalid"
    if "censored" in kinds:
        return "censored"
    if "error" in kinds:
        return "error"
    if "duplicate" in kinds:
        return "duplicate"
    if "running" in kinds or "waiting" in kinds:
        return "pending"
    if kinds.count("died") >= max_retries:
        return "gave_up"
    return "unevaluated"


#: outcomes that retire a draw (it fills no slot)
RETIRED = ("invalid", "censored", "error", "gave_up", "duplicate")
#: retired outcomes that count as failures in a row (a duplicate is no failure)
FAILURES = ("invalid", "censored", "error", "gave_up")


@dataclass
class SlotPlan:
    """The study's state seen as slots (see the module docstring).

    ``slots``: origins of the live slots, ascending (at most ``n_trials``);
    ``complete``: number of valid COMPLETE trials; ``done``: slots with a
    valid COMPLETE trial; ``orphans``: slots with no COMPLETE, RUNNING or
    WAITING trial, mapped to the parameters to re-queue (empty: not yet
    sampled; the copy draws them with the draw's seed); ``waiting``: WAITING
    trials that may still run; ``outcomes``: every draw's outcome by origin,
    ascending."""

    slots: list[int]
    complete: int
    done: set[int]
    orphans: dict[int, dict[str, Any]]
    waiting: int
    outcomes: dict[int, str]


def plan_slots(trials: Iterable[FrozenTrial], n_trials: int, max_retries: int = MAX_RETRIES) -> SlotPlan:
    """Slots of a study from its trials (a pure function of the stored state)."""
    trials = sorted(trials, key=lambda t: t.number)
    by_origin: dict[int, list[FrozenTrial]] = {}
    for t in trials:
        by_origin.setdefault(_origin(t), []).append(t)
    outcomes: dict[int, str] = {}
    slots: list[int] = []
    for t in trials:
        if not is_fresh(t):
            continue
        outcome = draw_outcome([trial_kind(c) for c in by_origin[t.number]], max_retries)
        outcomes[t.number] = outcome
        if outcome not in RETIRED and len(slots) < n_trials:
            slots.append(t.number)
    done = {o for o in slots if outcomes[o] == "valid"}
    orphans = {}
    for o in slots:
        if outcomes[o] == "unevaluated":
            orphans[o] = next((dict(c.params) for c in reversed(by_origin[o]) if c.params), {})
    waiting = sum(1 for t in trials
                  if trial_kind(t) == "waiting" and _origin(t) in slots and _origin(t) not in done)
    return SlotPlan(slots=slots, complete=sum(trial_kind(t) == "complete" for t in trials), done=done,
                    orphans=orphans, waiting=waiting, outcomes=outcomes)


def failure_run(outcomes: Mapping[int, str], kinds: tuple[str, ...] = FAILURES) -> tuple[int, int | None]:
    """The current run of failures: how many draws whose outcome is in ``kinds`` follow the last
    valid draw (in draw order), and the origin of the last of them. Draws without a result yet
    (pending, unevaluated) and duplicates are passed over; any other outcome ends the run."""
    run, last = 0, None
    for origin, outcome in sorted(outcomes.items()):
        if outcome in ("duplicate", "pending", "unevaluated"):
            continue
        if outcome in kinds:
            run, last = run + 1, origin
        else:
            run, last = 0, None
    return run, last


def stop_reason(plan: SlotPlan, *, max_consecutive_invalid: int = MAX_CONSECUTIVE_INVALID,
                max_retries: int = MAX_RETRIES) -> str | None:
    """Why the study must stop without reaching ``n_trials`` valid trials, or None.

    It stops when ``max_retries`` draws in a row ended with an evaluation error
    (or a worker that kept dying on them), and when ``max_consecutive_invalid``
    draws in a row were invalid, censored or failed: a space or a model that
    yields no valid point (or none within the time limit) must not run for ever."""
    errors, last = failure_run(plan.outcomes, ("error", "gave_up"))
    if errors >= max_retries:
        return (f"{errors} configurations in a row failed with an error (the last: trial {last}); "
                "the model seems unable to run with these settings: see the messages in trials.csv "
                "(bound: max_retries)")
    bad, last = failure_run(plan.outcomes)
    if bad >= max_consecutive_invalid:
        return (f"{bad} configurations in a row were invalid, censored or failed (the last: trial {last}) and "
                f"{plan.complete} valid; the search space yields (almost) no valid point: narrow it "
                "(model_options), raise time_limit if they were censored, or raise max_consecutive_invalid")
    return None


def skip_reason(trial_number: int, origin: int, trials: list[FrozenTrial], n_trials: int,
                max_retries: int = MAX_RETRIES) -> str | None:
    """Why the trial just asked must not be evaluated, or None to evaluate it."""
    plan = plan_slots(trials, n_trials, max_retries)
    if origin == trial_number:
        if trial_number not in plan.slots:
            return (f"surplus: {n_trials} slots are held by trials with lower numbers "
                    "(it is re-queued if one of them is retired)")
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


def requeue_orphans(study: optuna.Study, n_trials: int, trials: list[FrozenTrial] | None = None,
                    max_retries: int = MAX_RETRIES) -> list[int]:
    """Re-queue the configuration of every orphaned slot; return their origins."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    plan = plan_slots(trials, n_trials, max_retries)
    by_number = {t.number: t for t in trials}
    for origin, params in plan.orphans.items():
        study.enqueue_trial(params, user_attrs={"origin": origin}, skip_if_exists=False)
        why = "its worker died" if trial_kind(by_number[origin]) == "died" or params else \
            "it was skipped while lower trials ran"
        _log(f"[{study.study_name}] slot {origin}: configuration re-queued ({why})")
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


def skip(study: optuna.Study, trial: optuna.Trial, reason: str, *, duplicate: bool = False) -> None:
    """End the asked ``trial`` unevaluated: FAIL with user attribute ``skipped`` = ``reason``
    (and ``duplicate``: a concurrent duplicate, retired for good)."""
    if duplicate:
        study._storage.set_trial_user_attr(trial._trial_id, "duplicate", True)
    study._storage.set_trial_user_attr(trial._trial_id, "skipped", reason)
    study.tell(trial, state=TrialState.FAIL)
