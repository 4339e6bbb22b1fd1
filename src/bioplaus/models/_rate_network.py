"""Shared estimator plumbing of the rate-network learning rules (``fa``, ``dfa``, ``sign``, ``burstprop``).

:class:`RateNetworkClassifier` owns what these rules have in common and what
is not a learning rule: validation of inputs and structure, the seeded
initial state, the mini-batch loop of ``partial_fit`` (one pass over the given
rows in the given order, ``batch_size`` rows per update), SGD with momentum,
divergence detection (``diverged_``), the per-call alignment record
(``alignment_``) and prediction. A rule subclass supplies the network's
initial weights (:meth:`_init_network`), one batch's descent directions
(:meth:`_batch_gradients`), the network's output scores
(:meth:`_output_scores`) and, optionally, state to refresh after each update
(:meth:`_after_update`).

Repeated calls pay little besides their examples: a later ``partial_fit`` and
``predict`` check plain float arrays cheaply (:mod:`bioplaus.models._inputs`,
scikit-learn's checks and errors for anything else), and the finiteness
check at the end of a call reads a weight matrix only when a bound of its
magnitude, grown at each update from the update's factors, is unknown or
too large (:mod:`bioplaus.models._finite`; a rule reports its updates'
bounds through ``_grad_bounds``, otherwise every matrix is read). No number
depends on either. Every public call runs with BLAS held to one thread
(:mod:`bioplaus.models._threads`), so that no number depends on the caller's
thread count either.

A batch-1 step writes every weight: its outer products (:func:`batch_outer`)
and the SGD step (:meth:`RateNetworkClassifier._apply`) are compiled loops
(numba) making one pass over each matrix, with the very operations, hence
the very bits, of the NumPy expressions they replace (which still run for
arrays that are not contiguous).

Weights are stored input-major: ``W[l]`` has shape ``(n_l, n_{l+1})`` and a
layer computes ``a = h @ W[l] + b[l]`` for a batch ``h`` of shape
``(batch, n_l)``.
"""

from __future__ import annotations

import math
import numbers
import operator

import numpy as np
from numba import njit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from bioplaus.errors import InvalidConfigurationError
from bioplaus.models import _finite, _inputs
from bioplaus.models.architecture import MAX_LAYERS
from bioplaus.models._threads import holds_one_blas_thread

__all__ = ["RateNetworkClassifier", "update_angles", "ACTIVATIONS", "batch_outer", "add_scaled"]

#: rows per forward pass when predicting (bounds memory)
PREDICT_CHUNK = 4096

#: the hyperparameter names of each estimator class (``_get_param_names`` inspects ``__init__``)
_PARAM_NAMES = {}
_MISSING = object()


def _immutable(value):
    """True for a value that cannot change in place: a number, string, None, NumPy scalar or tuple of those."""
    if isinstance(value, int | float | str | np.generic) or value is None:
        return True
    return type(value) is tuple and all(map(_immutable, value))


def _sigmoid(a):
    # 1 / (1 + exp(-a)) without overflow warnings for large negative a
    return 0.5 * (1.0 + np.tanh(0.5 * a))


#: hidden nonlinearities: name -> (f(a), f'(a) expressed through (a, f(a)))
ACTIVATIONS = {
    "tanh": (np.tanh, lambda a, h: 1.0 - h * h),
    "sigmoid": (_sigmoid, lambda a, h: h * (1.0 - h)),
    "relu": (lambda a: np.maximum(a, 0.0), lambda a, h: (a > 0).astype(a.dtype)),
}


def batch_outer(h, d):
    """``h.T @ d`` (a batch's summed outer products), a new array.

    For one row, BLAS's product of inner dimension 1 forms each entry as
    ``0 + h_i d_j`` (one rounding; a product of -0 becomes +0): the broadcast
    product followed by ``+= 0`` gives the same bits (tested against BLAS,
    signed zeros, subnormals, inf and NaN included), here formed in one
    compiled pass (a fraction of BLAS's time).
    """
    if h.shape[0] == 1 and h.dtype == d.dtype:
        out = np.empty((h.shape[1], d.shape[1]), h.dtype)
        _outer_plus_zero(h[0], d[0], out, h.dtype.type(0))
        return out
    return h.T @ d


@njit(cache=True, nogil=True, error_model="numpy")
def _outer_plus_zero(h, d, out, zero):  # pragma: no cover - compiled
    """``out[i, j] = h[i] * d[j] + zero`` (``zero`` = 0 of the arrays' dtype; one pass, the same
    roundings as ``np.multiply(h.T, d)`` followed by ``+= 0``)."""
    for i in range(h.size):
        hi = h[i]
        for j in range(d.size):
            out[i, j] = hi * d[j] + zero


@njit(cache=True, nogil=True, error_model="numpy")
def _sgd_step(w, v, g, rate, mu, wd, momentum, decay):  # pragma: no cover - compiled
    """One SGD step in place, element by element, on flat arrays of one dtype: the very
    operations (one rounding each, in that dtype) of the NumPy sequence ``d = wd * w;
    g *= rate; v *= mu; v -= g; w += v`` (without momentum ``w -= g``) ``; w -= d``,
    in one pass over the arrays instead of five or six (``g`` is left as it was)."""
    for i in range(w.size):
        x = w[i]
        gi = g[i] * rate
        if momentum:
            vi = v[i] * mu
            vi = vi - gi
            v[i] = vi
            y = x + vi
        else:
            y = x - gi
        if decay:
            y = y - wd * x
        w[i] = y


@njit(cache=True, nogil=True, error_model="numpy")
def _add_scaled(z, g, rate):  # pragma: no cover - compiled
    """``z += rate * g`` in place on flat arrays of one dtype, in one pass (the same roundings
    as NumPy's ``z += rate * g``, without its temporary)."""
    for i in range(z.size):
        z[i] = z[i] + rate * g[i]


def add_scaled(z, g, rate):
    """``z += rate * g`` (``rate`` a scalar of z's dtype), compiled in one pass when the arrays allow."""
    flat = _flat_views(z, g)
    if flat is None:
        z += rate * g
    else:
        _add_scaled(*flat, rate)


def _flat_views(*arrays):
    """Flat views of C-contiguous arrays of one shape and dtype, else None."""
    a0 = arrays[0]
    for a in arrays:
        if not (type(a) is np.ndarray and a.flags.c_contiguous and a.shape == a0.shape and a.dtype == a0.dtype):
            return None
    return tuple(a.reshape(-1) for a in arrays)


def update_angles(rule_grads, bp_grads):
    """Angle in degrees between each pair of flattened weight updates (NaN if one is zero)."""
    out = np.empty(len(rule_grads))
    for i, (g, b) in enumerate(zip(rule_grads, bp_grads)):
        g, b = np.ravel(g), np.ravel(b)
        denom = float(np.sqrt(np.dot(g, g))) * float(np.sqrt(np.dot(b, b)))
        if not np.isfinite(denom) or denom == 0:
            out[i] = np.nan
        else:
            out[i] = np.degrees(np.arccos(np.clip(float(np.dot(g, b)) / denom, -1.0, 1.0)))
    return out


class RateNetworkClassifier(ClassifierMixin, BaseEstimator):
    """Base class: a fully connected rate network trained by a local rule (see module docstring).

    Subclasses declare their hyperparameters in ``__init__`` and must have at
    least ``hidden_layer_sizes``, ``batch_size``, ``momentum``, ``epochs``,
    ``shuffle``, ``dtype``, ``record_alignment`` and ``random_state``.

    Fitted attributes common to all rules
    -------------------------------------
    W_, b_ : lists of arrays, ``W_[l]`` of shape ``(n_l, n_{l+1})`` (copies).
    classes_, n_features_in_ : as in scikit-learn.
    diverged_ : bool, a loss or weight became NaN/inf; training stops and the
        model predicts at chance (uniformly at random; ``predict_proba`` uniform).
    n_examples_seen_ : int, rows trained on.
    loss_curve_ : list of float, the rule's training loss of each mini-batch
        (before its update).
    alignment_ : list of arrays of shape ``(n_hidden_layers,)``, one per
        ``partial_fit`` call (and per epoch of ``fit``) that trained at least
        one batch, when ``record_alignment`` is True: the mean over that call's
        mini-batches of the angle in degrees between the rule's update of each
        hidden layer's weights and the backpropagated gradient of the same loss
        on the same batch (NaN entries are batches where one of them is zero,
        left out of the mean). Empty when ``record_alignment`` is False.
    alignment_batches_ : list of int, the number of mini-batches behind each
        entry of ``alignment_`` (for weighting calls into epochs).
    """

    # ------------------------------------------------------------ rule interface

    def _rule_config(self):
        """Validate the rule's own hyperparameters; raise InvalidConfigurationError."""

    def _init_network(self, sizes, rng_init, rng_feedback, dtype):
        raise NotImplementedError

    def _batch_gradients(self, X, T, want_bp):
        """``(loss, gW, gb, bp_hidden_gW or None)`` for one batch; the update is ``-rate * g``.

        It may also set ``self._grad_bounds = (bounds of max |gW[l]|, bounds of max |gb[l]|)``
        (lists of floats or None, see :mod:`~bioplaus.models._finite`); without them the
        finiteness check after the update reads every matrix."""
        raise NotImplementedError

    def _output_scores(self, X):
        raise NotImplementedError

    def _probabilities(self, scores):
        raise NotImplementedError

    def _learning_rates(self):
        """One learning rate per layer (hidden layers first, output last)."""
        raise NotImplementedError

    def _weight_decay(self):
        return 0.0

    def _after_update(self):
        """Refresh state derived from the weights (sign symmetry's feedback)."""

    # ------------------------------------------------------------ validation helpers

    def _float_dtype(self):
        if str(self.dtype) not in ("float32", "float64"):
            raise InvalidConfigurationError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        return np.dtype(str(self.dtype))

    @staticmethod
    def _integer(name, value, low=1):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral | float | np.floating) \
                or value != int(value) or int(value) < low:
            raise InvalidConfigurationError(f"{name} must be an integer >= {low}, got {value!r}")
        return int(value)

    @staticmethod
    def _number(name, value, low=None, high=None, low_open=False):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
            raise InvalidConfigurationError(f"{name} must be a finite number, got {value!r}")
        value = float(value)
        if low is not None and (value < low or (low_open and value == low)):
            raise InvalidConfigurationError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
        if high is not None and value > high:
            raise InvalidConfigurationError(f"{name} must be <= {high}, got {value}")
        return value

    def _hidden_sizes(self):
        hidden = self.hidden_layer_sizes
        if isinstance(hidden, numbers.Integral):
            hidden = (hidden,)
        try:
            hidden = tuple(hidden)
        except TypeError:
            raise InvalidConfigurationError(
                f"hidden_layer_sizes must be a tuple of integers, got {self.hidden_layer_sizes!r}") from None
        if not 1 <= len(hidden) <= MAX_LAYERS:
            raise InvalidConfigurationError(f"hidden_layer_sizes: 1 to {MAX_LAYERS} hidden layers, got {len(hidden)}")
        return tuple(self._integer("hidden_layer_sizes", h) for h in hidden)

    def _validate_common(self):
        hidden = self._hidden_sizes()
        self._integer("batch_size", self.batch_size)
        self._number("momentum", self.momentum, 0.0, 1.0)
        if self.momentum >= 1.0:
            raise InvalidConfigurationError(f"momentum must be < 1, got {self.momentum}")
        if not isinstance(self.record_alignment, bool | np.bool_):
            raise InvalidConfigurationError(f"record_alignment must be True or False, got {self.record_alignment!r}")
        self._rule_config()
        return hidden

    def _checked(self):
        """``(dtype, hidden sizes)`` of the current hyperparameters, validated (:meth:`_float_dtype`,
        :meth:`_validate_common`); a later call whose hyperparameters are the very objects
        last validated, all immutable, reuses the result instead of validating them again
        (``set_params``, an assignment or a list changed in place is seen)."""
        cls = type(self)
        names = _PARAM_NAMES.get(cls)
        if names is None:
            names = _PARAM_NAMES[cls] = tuple(cls._get_param_names())
        d = self.__dict__
        values = tuple(d.get(n, _MISSING) for n in names)
        cached = d.get("_checked_params")
        if cached is not None and all(map(operator.is_, values, cached[0])):
            return cached[1]
        result = (self._float_dtype(), self._validate_common())
        if _MISSING not in values and all(map(_immutable, values)):
            d["_checked_params"] = (values, result)
        return result

    # ------------------------------------------------------------ state

    def _initialize(self, n_in, n_out, hidden, dtype):
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        init_ss, fb_ss, shuffle_ss = np.random.SeedSequence(seed).spawn(3)
        self._sizes = (int(n_in), *hidden, int(n_out))
        self._dtype = dtype
        self._W = []
        self._b = []
        self._init_network(self._sizes, np.random.default_rng(init_ss), np.random.default_rng(fb_ss), dtype)
        self._vW = [np.zeros_like(w) for w in self._W]
        self._vb = [np.zeros_like(b) for b in self._b]
        self._shuffle_rng = np.random.default_rng(shuffle_ss)
        self._magnitudes = self._unknown_magnitudes()
        self._after_update()
        self.diverged_ = False
        self.n_examples_seen_ = 0
        self.loss_curve_ = []
        self.alignment_ = []
        self.alignment_batches_ = []

    def _unknown_magnitudes(self):
        """Bounds of ``max |x|`` per array (None: unknown, read at the next check); velocities start at 0."""
        return {"W": [None] * len(self._W), "b": [None] * len(self._b),
                "vW": [0.0] * len(self._vW), "vb": [0.0] * len(self._vb)}

    def _bounds(self):
        mags = self.__dict__.get("_magnitudes")
        if mags is None:  # e.g. unpickled from an earlier version: nothing known
            mags = self._magnitudes = self._unknown_magnitudes()
            mags["vW"] = [None] * len(self._vW)
            mags["vb"] = [None] * len(self._vb)
        return mags

    def _all_finite(self):
        mags = self._bounds()
        if not (_finite.all_finite(self._W, mags["W"]) and _finite.all_finite(self._b, mags["b"])):
            return False
        _finite.refresh(self._vW, mags["vW"])
        _finite.refresh(self._vb, mags["vb"])
        return True

    def _apply(self, gW, gb):
        """SGD with momentum: ``v <- mu v - rate g``, ``W <- W + v`` (then optional weight decay)."""
        mu = float(self.momentum)
        wd = self._weight_decay()
        mags = self._bounds()
        grad_bounds = self.__dict__.pop("_grad_bounds", None)
        if grad_bounds is None:
            grad_bounds = ([None] * len(gW), [None] * len(gb))
        dt = self._dtype
        for l, rate in enumerate(self._learning_rates()):
            rate = self._dtype.type(rate)
            for params, vel, g, key, G in ((self._W, self._vW, gW[l], "W", grad_bounds[0][l]),
                                           (self._b, self._vb, gb[l], "b", grad_bounds[1][l])):
                decays = bool(wd) and params is self._W
                P, V = mags[key][l], mags["v" + key][l]
                step = None if G is None else abs(float(rate)) * G
                flat = _flat_views(params[l], vel[l], g)
                if flat is not None:  # the same operations as below, fused (compiled)
                    _sgd_step(*flat, rate, dt.type(mu), dt.type(wd), bool(mu), decays)
                else:
                    decay = self._dtype.type(wd) * params[l] if decays else None
                    g *= rate  # in place (g is this batch's own array): the same numbers as rate * g
                    if mu:
                        vel[l] *= self._dtype.type(mu)
                        vel[l] -= g
                        params[l] += vel[l]
                    else:
                        params[l] -= g
                    if decay is not None:
                        params[l] -= decay
                if mu:
                    V = _finite.grown([None if V is None else abs(float(dt.type(mu))) * V, step], 3, dt)
                    mags["v" + key][l] = V
                    new = _finite.grown([P, V], 1, dt)
                else:
                    new = _finite.grown([P, step], 2, dt)
                if decays:
                    new = _finite.grown([new, None if P is None else abs(float(dt.type(wd))) * P], 2, dt)
                mags[key][l] = new
        self._after_update()

    def _train(self, X, y_idx):
        """One pass over ``X`` in order, ``batch_size`` rows per update."""
        n_out = self._sizes[-1]
        B = int(self.batch_size)
        want = bool(self.record_alignment)
        if want:
            angle_sum = np.zeros(len(self._sizes) - 2)
            angle_n = np.zeros(len(self._sizes) - 2)
        batches = 0
        with np.errstate(all="ignore"):  # divergence is detected, not warned about
            for start in range(0, X.shape[0], B):
                xb = X[start:start + B]
                T = np.zeros((xb.shape[0], n_out), dtype=self._dtype)
                T[np.arange(xb.shape[0]), y_idx[start:start + B]] = 1
                loss, gW, gb, bp = self._batch_gradients(xb, T, want)
                loss = float(loss)
                self.loss_curve_.append(loss)
                if not math.isfinite(loss):
                    self.diverged_ = True
                    break
                if want:
                    ang = update_angles(gW[:-1], bp)
                    ok = np.isfinite(ang)
                    angle_sum[ok] += ang[ok]
                    angle_n[ok] += 1
                self._apply(gW, gb)
                self.n_examples_seen_ += xb.shape[0]
                batches += 1
            if not self.diverged_ and not self._all_finite():
                self.diverged_ = True
        if want and batches:
            with np.errstate(invalid="ignore", divide="ignore"):
                self.alignment_.append(np.where(angle_n > 0, angle_sum / np.maximum(angle_n, 1), np.nan))
            self.alignment_batches_.append(batches)

    def _check_structure(self, hidden, dtype):
        if (hidden, dtype) != (self._sizes[1:-1], self._dtype):
            raise InvalidConfigurationError(
                "partial_fit cannot change hidden_layer_sizes or dtype after the first call; call fit instead")

    # ------------------------------------------------------------ scikit-learn API

    @holds_one_blas_thread
    def fit(self, X, y):
        """Train ``epochs`` passes over ``(X, y)``, reshuffled each epoch with ``random_state``.

        X : array of shape (n_samples, n_features), values in [0, 1] (any real values work).
        y : array of shape (n_samples,), class labels.
        """
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float64], reset=True)
        check_classification_targets(y)
        epochs = self.epochs
        if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 0:
            raise InvalidConfigurationError(f"epochs must be a non-negative integer, got {epochs!r}")
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        dtype = self._float_dtype()
        hidden = self._validate_common()
        self._initialize(X.shape[1], len(self.classes_), hidden, dtype)
        X = np.asarray(X, dtype=dtype)
        for _ in range(int(epochs)):
            order = self._shuffle_rng.permutation(X.shape[0]) if self.shuffle else np.arange(X.shape[0])
            self._train(X[order], y_idx[order])
            if self.diverged_:
                break
        return self

    @holds_one_blas_thread
    def partial_fit(self, X, y, classes=None):
        """One pass over ``(X, y)`` in the given order (no shuffling), from the current weights.

        ``classes`` (all labels) is required on the first call. Hyperparameters
        changed with ``set_params`` between calls (rates, momentum) apply from
        this call on; the structure (``hidden_layer_sizes``, ``dtype``) cannot change.
        """
        first, X, y_idx = _inputs.partial_fit_rows(self, X, y, classes)
        dtype, hidden = self._checked()
        if first:
            self._initialize(X.shape[1], len(self.classes_), hidden, dtype)
        else:
            self._check_structure(hidden, dtype)
        if not self.diverged_:
            self._train(np.asarray(X, dtype=dtype), y_idx)
        return self

    def _scores(self, X):
        if not hasattr(self, "classes_"):
            check_is_fitted(self, "classes_")
        X = _inputs.rows(self, X)
        X = np.asarray(X, dtype=self._dtype)
        out = np.empty((X.shape[0], len(self.classes_)), dtype=np.float64)
        with np.errstate(all="ignore"):
            for s in range(0, X.shape[0], PREDICT_CHUNK):
                out[s:s + PREDICT_CHUNK] = self._output_scores(X[s:s + PREDICT_CHUNK])
        return out

    @holds_one_blas_thread
    def predict(self, X):
        """Class of the largest output (at chance, uniformly at random, if diverged)."""
        scores = self._scores(X)
        if self.diverged_:
            rng = np.random.default_rng(0)
            return self.classes_[rng.integers(len(self.classes_), size=scores.shape[0])]
        if np.isnan(scores).any():
            scores = np.nan_to_num(scores, nan=-np.inf)
        return self.classes_[np.argmax(scores, axis=1)]

    @holds_one_blas_thread
    def predict_proba(self, X):
        """Class probabilities of shape (n_samples, n_classes) (uniform if diverged)."""
        scores = self._scores(X)
        if self.diverged_:
            return np.full(scores.shape, 1.0 / scores.shape[1])
        with np.errstate(all="ignore"):
            return self._probabilities(scores)

    @property
    def W_(self):
        check_is_fitted(self, "classes_")
        return [w.copy() for w in self._W]

    @property
    def b_(self):
        check_is_fitted(self, "classes_")
        return [b.copy() for b in self._b]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags
