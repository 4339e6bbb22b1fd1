"""Cross-validated evaluation of one hyperparameter configuration.

One configuration → stratified k-fold cross-validation. Each fold builds a
fresh estimator from the model registry, trains it for ``epochs`` passes by
repeated ``partial_fit`` calls on shuffled chunks of the training rows (so the
time limit and divergence are checked between chunks; without a time limit the
chunks do not depend on timing, so where a diverged fold is seen to stop does
not either, :func:`next_chunk_rows`), and measures the test
accuracy of the held-out fold after every epoch (the learning curve; the last
epoch's value is the fold's accuracy). Testing draws no random number of the
model's training and does not change the chunks, so the curve leaves the
trained model exactly as it would be without it; its time counts neither as
training time nor against the time limit. Folds run in parallel with joblib; a dataset
stored as a ``numpy.memmap`` is shared with the fold workers by reference
(joblib passes memory maps by file name), never copied whole.

Outcomes that are results, not crashes:

* *invalid*: the estimator raised :class:`~bioplaus.errors.InvalidConfigurationError`
  (a hyperparameter combination that cannot be run); no accuracy.
* *diverged*: the fit produced NaN/inf (``diverged_`` set by the estimator or
  a non-finite ``loss_``): training stops and the stopped model is tested
  (usually chance); when the fit instead raised a numerical error
  (``FloatingPointError``, an overflow) there is no model to test and the
  fold is given chance accuracy, ``1 / n_classes``, without testing.
* *censored*: a fold's training exceeded ``time_limit`` CPU seconds (checked
  between chunks); training stops and the partly trained model is tested. The
  configuration was not trained as configured, so the analysis keeps its
  partial accuracy and ``epochs_completed`` but leaves it out of every
  statistic (``time_limit`` is a guard against runaway configurations, not a
  budget).
* *error*: anything else raised while fitting a fold; recorded with its message.
* *fatal*: an error that will recur whatever the configuration: the model
  cannot be built (its ``build`` raised anything but
  :class:`~bioplaus.errors.InvalidConfigurationError`), or a
  :class:`~bioplaus.errors.BioplausError` (a bad option, missing data) was
  raised anywhere. Recorded like an error; the study stops at once
  (:func:`bioplaus.study.worker.run_worker`).

Settings that cannot work for the data (``n_folds`` above the smallest class
count) raise :class:`~bioplaus.errors.ConfigError` before any fold runs
(:func:`check_folds`).
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
from joblib import Parallel, delayed
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from bioplaus.errors import BioplausError, ConfigError, InvalidConfigurationError
from bioplaus.models.registry import get_model
from bioplaus.study.seeds import INIT, SPLIT, derive_seed

#: largest number of rows per ``partial_fit`` call (rounded up to a multiple of the batch size)
DEFAULT_CHUNK_ROWS = 4096
#: wall seconds a chunk should take when a time limit is set: chunks start at one mini-batch and
#: grow (at most fourfold per chunk) towards this, so that the limit is checked often even for
#: slow models (without a limit they grow fourfold to the largest chunk, whatever the speed)
CHUNK_SECONDS = 2.0
#: rows per ``predict`` call when testing (bounds the memory of a test pass)
PREDICT_CHUNK_ROWS = 8192


@dataclass
class FoldResult:
    """Outcome of one fold.

    ``accuracy`` in [0, 1] (NaN if invalid/error); ``epoch_accuracies[e]`` the
    test accuracy after epoch ``e + 1`` (one entry per whole epoch trained; a
    diverged fold repeats its stopped model's accuracy for the epochs it did not
    train, since that model stays diverged); ``fit_seconds`` wall seconds of
    training and ``test_seconds`` of the per-epoch tests; ``epochs_completed``
    (fractional when stopped inside an epoch).
    """

    fold: int
    accuracy: float = math.nan
    epoch_accuracies: list[float] = field(default_factory=list)
    fit_seconds: float = 0.0
    test_seconds: float = 0.0
    epochs_completed: float = 0.0
    diverged: bool = False
    censored: bool = False
    invalid: bool = False
    error: bool = False
    fatal: bool = False
    message: str = ""

    @property
    def timed_out(self) -> bool:
        """Former name of :attr:`censored`."""
        return self.censored


@dataclass
class EvaluationResult:
    """Outcome of one configuration over all folds."""

    folds: list[FoldResult] = field(default_factory=list)
    n_classes: int = 10
    epochs: int = 0

    @property
    def chance(self) -> float:
        return 1.0 / self.n_classes

    @property
    def invalid(self) -> bool:
        return any(f.invalid for f in self.folds)

    @property
    def error(self) -> bool:
        return any(f.error for f in self.folds) and not self.invalid

    @property
    def fatal(self) -> bool:
        """An error that will recur for any configuration (see the module docstring)."""
        return any(f.fatal for f in self.folds)

    @property
    def diverged(self) -> bool:
        return any(f.diverged for f in self.folds)

    @property
    def censored(self) -> bool:
        """A fold hit the time limit: the configuration was not trained as configured."""
        return any(f.censored for f in self.folds)

    @property
    def timed_out(self) -> bool:
        """Former name of :attr:`censored`."""
        return self.censored

    @property
    def epochs_completed(self) -> float:
        """Epochs every fold completed (the smallest over folds; fractional when stopped in an epoch)."""
        return float(min((f.epochs_completed for f in self.folds), default=0.0))

    @property
    def epoch_accuracies(self) -> list[float | None]:
        """Mean test accuracy over folds after each epoch 1..``epochs`` (None where a fold
        did not complete that epoch, and for every epoch when invalid or a fold errored).
        The last entry of a fully trained configuration equals :attr:`accuracy` exactly."""
        n = max([self.epochs] + [len(f.epoch_accuracies) for f in self.folds])
        if self.invalid or self.error or not self.folds:
            return [None] * n
        out: list[float | None] = []
        for e in range(n):
            values = [f.epoch_accuracies[e] for f in self.folds if e < len(f.epoch_accuracies)]
            out.append(float(np.mean(values)) if len(values) == len(self.folds) else None)
        return out

    @property
    def accuracy(self) -> float:
        """Mean test accuracy over folds; NaN when invalid or a fold errored."""
        if self.invalid or self.error:
            return math.nan
        return float(np.mean([f.accuracy for f in self.folds]))

    @property
    def fit_seconds(self) -> float:
        return float(sum(f.fit_seconds for f in self.folds))

    @property
    def message(self) -> str:
        msgs = []
        for f in self.folds:
            if f.message and f.message not in msgs:
                msgs.append(f.message)
        return " | ".join(msgs)

    def objective(self, penalty: float | None = None) -> float:
        """The value an optimiser sees: mean accuracy, or ``penalty`` (default:
        chance accuracy) for an invalid configuration."""
        if self.invalid:
            return self.chance if penalty is None else float(penalty)
        return self.accuracy

    def as_record(self) -> dict[str, Any]:
        """Flat, JSON-serialisable summary (stored as optuna user attributes)."""
        rec: dict[str, Any] = {
            "accuracy": None if math.isnan(self.accuracy) else self.accuracy,
            "fold_accuracies": [None if math.isnan(f.accuracy) else f.accuracy for f in self.folds],
            "fold_fit_seconds": [f.fit_seconds for f in self.folds],
            "fold_epochs": [f.epochs_completed for f in self.folds],
            "epochs_completed": self.epochs_completed,
            "epoch_accuracies": self.epoch_accuracies,
            "fold_epoch_accuracies": [list(f.epoch_accuracies) for f in self.folds],
            "fit_seconds": self.fit_seconds,
            "fold_test_seconds": [f.test_seconds for f in self.folds],
            "diverged": self.diverged,
            "censored": self.censored,
            "invalid": self.invalid,
            "error": self.error,
            "fatal": self.fatal,
            "message": self.message,
            "n_classes": self.n_classes,
            "chance": self.chance,
        }
        return rec


def fold_splits(y: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold ``(train_idx, test_idx)`` pairs, shuffled by ``seed``."""
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [(tr.astype(np.int64), te.astype(np.int64)) for tr, te in skf.split(np.zeros(len(y)), y)]


def _is_diverged(est) -> bool:
    if getattr(est, "diverged_", False):
        return True
    loss = getattr(est, "loss_", None)
    if loss is not None:
        try:
            return not math.isfinite(float(loss))
        except (TypeError, ValueError):
            return False
    return False


def _looks_numerical(exc: BaseException) -> bool:
    if isinstance(exc, (FloatingPointError, OverflowError)):
        return True
    text = str(exc).lower()
    return any(w in text for w in ("nan", "non-finite", "infinity", "inf ", "overflow"))


def _batch_size(est) -> int:
    try:
        return max(1, int(est.get_params().get("batch_size") or 1))
    except (TypeError, ValueError):
        return 1


def _chunk_rows(est, chunk_rows: int) -> int:
    """``chunk_rows`` rounded up to whole mini-batches of ``est`` (chunking then never changes the batches)."""
    batch = _batch_size(est)
    return max(batch, int(math.ceil(chunk_rows / batch)) * batch)


def next_chunk_rows(est, rows: int, max_rows: int, seconds_per_row: float = 0.0,
                    target_seconds: float | None = None) -> int:
    """Rows of the ``partial_fit`` chunk after one of ``rows`` rows: four times as many, at most
    ``max_rows`` and, when ``target_seconds`` is given, at most what it allows at the measured
    ``seconds_per_row``, in whole mini-batches of ``est``.

    :func:`run_fold` gives a target only when a time limit is set. Without one the chunks, and
    so the points between them where divergence is checked, depend on nothing but the model's
    batch size: a diverged fold stops after the same chunk, with the same ``epochs_completed``
    and the same model, whatever the machine's load or ``--cores`` (chunking itself never
    changes what is learnt, since chunks are whole mini-batches).
    """
    rows = min(int(max_rows), 4 * int(rows))
    if target_seconds is not None:
        rows = min(rows, _chunk_rows(est, int(target_seconds / max(seconds_per_row, 1e-9))))
    return rows


def _accuracy(est, X, y, idx) -> float:
    correct = 0
    for start in range(0, len(idx), PREDICT_CHUNK_ROWS):
        part = idx[start : start + PREDICT_CHUNK_ROWS]
        pred = est.predict(X[part])
        correct += int(np.sum(pred == y[part]))
    return correct / max(1, len(idx))


def run_fold(
    model: str,
    params: Mapping[str, Any],
    X: np.ndarray,
    y: np.ndarray,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    *,
    fold: int,
    input_shape: tuple[int, int, int],
    classes: np.ndarray,
    epochs: int,
    seed: int,
    options: Mapping[str, Any] | None = None,
    time_limit: float | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    on_epoch: Callable[[Any, float], None] | None = None,
) -> FoldResult:
    """Train one fresh estimator on ``X[train_idx]`` and test it on ``X[test_idx]``.

    ``X`` is flat ``(n, c*h*w)`` float32 (possibly a memory map); only the rows
    of one chunk are copied at a time. Never raises for a model's failure: the
    outcome is in the returned :class:`FoldResult`.

    ``on_epoch(estimator, epochs_completed)``, if given, is called after each
    epoch, and once where training stops inside one (divergence, time limit;
    ``epochs_completed`` is then fractional), before the final test. Its time
    counts neither as training time nor towards ``time_limit``; what it raises
    is recorded like a failure of the model.

    The fold runs with BLAS (and OpenMP) held to one thread, whatever the calling
    process allows: a product computed by several threads may round differently, and the
    same configuration and seed must give the same numbers whatever ``--cores`` or
    ``n_jobs`` (folds parallelise by processes, :func:`evaluate`).
    """
    res = FoldResult(fold=fold)
    spec = get_model(model)
    with threadpool_limits(limits=1):
        try:
            est = spec.build(
                dict(params),
                input_shape=tuple(input_shape),
                n_classes=len(classes),
                epochs=int(epochs),
                random_state=int(seed),
                options=dict(options or {}),
            )
        except InvalidConfigurationError as exc:
            res.invalid, res.message = True, f"invalid configuration: {exc}"
            return res
        except Exception as exc:  # noqa: BLE001 - a model that cannot be built stops the study
            res.error = res.fatal = True
            res.message = f"model {model!r} cannot be built: {_describe_exception(exc)}"
            return res
        try:
            if spec.warm_up is not None:  # one-off costs (kernel compilation) are not training time
                spec.warm_up(est, X[train_idx[:2]], y[train_idx[:2]], classes)
            rng = np.random.default_rng(seed)
            max_chunk = _chunk_rows(est, chunk_rows)
            chunk = _batch_size(est)  # start with one mini-batch: a slow model is checked early
            target = None if time_limit is None else min(CHUNK_SECONDS, max(0.05, time_limit / 10))
            n_train, n_epochs = len(train_idx), int(epochs)
            t0 = time.perf_counter()
            # the limit counts this process's CPU time, not wall time, so that a
            # crowded machine (more jobs than cores) does not cut trials short;
            # the per-epoch tests are not training and are not counted
            cpu0 = time.process_time()
            test_cpu = 0.0
            stop = False
            with np.errstate(all="ignore"):
                for epoch in range(n_epochs):
                    order = train_idx[rng.permutation(n_train)]
                    start = 0
                    while start < n_train:
                        part = order[start : start + chunk]
                        t_chunk = time.perf_counter()
                        est.partial_fit(X[part], y[part], classes=classes)
                        per_row = (time.perf_counter() - t_chunk) / len(part)
                        start += len(part)
                        # chunk boundaries fall on whole mini-batches, so adapting them to the
                        # measured speed (only under a time limit) never changes what is learnt
                        chunk = next_chunk_rows(est, chunk, max_chunk, per_row, target)
                        res.epochs_completed = epoch + start / n_train
                        if _is_diverged(est):
                            res.diverged, stop = True, True
                            res.message = f"diverged (non-finite values) in epoch {epoch + 1}"
                            break
                        finished = epoch == n_epochs - 1 and start >= n_train  # nothing was cut short
                        if (time_limit is not None and not finished
                                and time.process_time() - cpu0 - test_cpu > time_limit):
                            res.censored, stop = True, True
                            res.message = (
                                f"censored: time limit of {time_limit:g} CPU s reached after "
                                f"{res.epochs_completed:.2f} of {epochs} epochs"
                            )
                            break
                    if on_epoch is not None:  # paused: the callback's time is not training time
                        wall, cpu = time.perf_counter(), time.process_time()
                        on_epoch(est, res.epochs_completed)
                        t0 += time.perf_counter() - wall
                        cpu0 += time.process_time() - cpu
                    if stop:
                        break
                    # a whole epoch trained: one point of the learning curve
                    c_test, w_test = time.process_time(), time.perf_counter()
                    res.epoch_accuracies.append(_accuracy(est, X, y, test_idx))
                    test_cpu += time.process_time() - c_test
                    res.test_seconds += time.perf_counter() - w_test
                res.fit_seconds = time.perf_counter() - t0 - res.test_seconds
                if stop or not res.epoch_accuracies:  # stopped inside an epoch: test the model as it is
                    w_test = time.perf_counter()
                    res.accuracy = _accuracy(est, X, y, test_idx)
                    res.test_seconds += time.perf_counter() - w_test
                else:
                    res.accuracy = res.epoch_accuracies[-1]
                if res.diverged:  # a diverged model stays so: its accuracy holds for the epochs left
                    res.epoch_accuracies += [res.accuracy] * (n_epochs - len(res.epoch_accuracies))
        except InvalidConfigurationError as exc:
            res.invalid, res.message = True, f"invalid configuration: {exc}"
        except BioplausError as exc:  # a bad option, missing data: the same for every configuration
            res.error = res.fatal = True
            res.message = f"{type(exc).__name__}: {exc}"
        except MemoryError:
            res.error, res.message = True, "out of memory while fitting this configuration"
        except Exception as exc:  # a model's failure is recorded, the study goes on
            if _looks_numerical(exc):
                res.diverged = True
                res.message = f"diverged: {type(exc).__name__}: {exc}"
                res.accuracy = 1.0 / len(classes)
                res.epoch_accuracies += [res.accuracy] * (int(epochs) - len(res.epoch_accuracies))
            else:
                res.error = True
                res.message = f"error: {_describe_exception(exc)}"
    return res


def _describe_exception(exc: BaseException) -> str:
    """``Type: message at file:line`` (the innermost frame) of an exception."""
    if isinstance(exc, BioplausError):
        return str(exc)
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


def check_folds(y: np.ndarray, n_folds: int, dataset: str = "the dataset") -> None:
    """Raise :class:`~bioplaus.errors.ConfigError` unless every class of ``y`` has at
    least ``n_folds`` samples (stratified k-fold needs one per fold)."""
    classes, counts = np.unique(np.asarray(y), return_counts=True)
    if len(classes) < 2:
        raise ConfigError(f"{dataset} has {len(classes)} class(es); a classification study needs at least 2")
    k = int(np.argmin(counts))
    if int(n_folds) > int(counts[k]):
        raise ConfigError(
            f"n_folds={n_folds} is more than the {int(counts[k])} samples of class {classes[k]!r} in {dataset} "
            "(each fold needs one of every class): lower n_folds (config key `n_folds`, option --folds) or "
            "use more samples (datasets.<name>.max_samples)")


def evaluate(
    model: str,
    params: Mapping[str, Any],
    X: np.ndarray,
    y: np.ndarray,
    *,
    input_shape: tuple[int, int, int],
    n_folds: int = 3,
    epochs: int = 10,
    split_seed: int = 0,
    init_seed: int = 0,
    options: Mapping[str, Any] | None = None,
    time_limit: float | None = None,
    n_jobs: int = 1,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> EvaluationResult:
    """Stratified ``n_folds``-fold cross-validation of one configuration.

    Parameters
    ----------
    X: flat images ``(n, c*h*w)`` float32 in [0, 1] (a ``numpy.memmap`` is shared
        with the workers by reference); y: int labels ``(n,)``.
    split_seed: seed of the fold split; init_seed: seed from which each fold's
        model initialisation and shuffling seed is derived.
    time_limit: CPU seconds of training allowed per fold (None: unlimited), a
        guard against runaway configurations; checked between chunks, so a fold
        may overrun it by one chunk (about ``CHUNK_SECONDS``; with a limit the
        chunks follow the measured speed, so a diverged fold's
        ``epochs_completed`` then can too); testing is not counted. A fold that
        hits it is *censored* (see the module docstring).
    n_jobs: folds run in parallel on at most this many processes, each with one
        BLAS thread (:func:`run_fold`), so that ``n_jobs`` changes no number.
    """
    classes = np.unique(y)
    check_folds(y, n_folds)
    splits = fold_splits(y, n_folds, split_seed)
    n_par = max(1, min(int(n_jobs), n_folds))
    calls = [
        delayed(run_fold)(
            model, params, X, y, tr, te,
            fold=k, input_shape=input_shape, classes=classes, epochs=epochs,
            seed=derive_seed(init_seed, INIT, k), options=options,
            time_limit=time_limit, chunk_rows=chunk_rows,
        )
        for k, (tr, te) in enumerate(splits)
    ]
    if n_par == 1:
        folds = [c[0](*c[1], **c[2]) for c in calls]
    else:
        _warm_up_once(model, params, X, y, splits[0][0], input_shape, classes, epochs, options)
        folds = Parallel(n_jobs=n_par, backend="loky", max_nbytes="1M", mmap_mode="r")(calls)
    return EvaluationResult(folds=list(folds), n_classes=len(classes), epochs=int(epochs))


def _warm_up_once(model, params, X, y, train_idx, input_shape, classes, epochs, options):
    """Pay a model's one-off costs (kernels compiled and cached on disk) here, once, rather
    than in every fold process at the same time. A failure is left to the folds, which
    run the same configuration and record what happens."""
    spec = get_model(model)
    if spec.warm_up is None:
        return
    try:
        est = spec.build(dict(params), input_shape=tuple(input_shape), n_classes=len(classes),
                         epochs=int(epochs), random_state=0, options=dict(options or {}))
        with np.errstate(all="ignore"):
            spec.warm_up(est, X[train_idx[:2]], y[train_idx[:2]], classes)
    except Exception:  # noqa: BLE001 - the folds record the outcome
        pass


def split_seed_for(study_seed: int) -> int:
    """The fold split shared by every trial of a study (configurations are compared on the same folds)."""
    return derive_seed(study_seed, SPLIT)


__all__ = [
    "EvaluationResult",
    "FoldResult",
    "evaluate",
    "check_folds",
    "fold_splits",
    "run_fold",
    "split_seed_for",
]
