"""The segregated-dendrite network (Guerguiev, Lillicrap & Richards 2017) as an estimator.

:class:`SegregatedDendriteClassifier` wraps the NumPy simulation core
(:mod:`.simulator`, :mod:`.state`, :mod:`.config`) in the scikit-learn API;
:mod:`.spec` registers it in the study as ``segdend``. Hyperparameter names mirror the
paper and its reference code (``l_f_phase``, ``lambda_max``, ``g_B``,
``f_etas`` ...) so that the 2019 study's logs line up.

Our extension: ``batch_size = B > 1`` simulates B examples side by side and
moves every weight by the mean of their B updates (``batch_size = 1`` is the
paper's online rule). With random phase lengths and ``B > 1`` one pair of phase
lengths is drawn per batch.

Alignment (``record_alignment``, as the rate-network rules record it): per
mini-batch, the angle between each hidden layer's weight update from the
plateau-potential errors and the update the model's own ``use_backprop``
control would have applied from the very same simulated phases (same mean
PSPs, somatic potentials and output error; the control's error backpropagated
through the layer above as already moved by the batch, as the control does),
averaged per ``partial_fit`` call into ``alignment_``.

Repeated calls (a ``partial_fit`` on one example, a ``predict`` on one row)
pay little beyond the simulation: the validated configuration, the
simulator, the test streams and a small test state are kept between calls
(and rebuilt when a parameter changed), plain NumPy input takes a cheap path
through scikit-learn's checks (:mod:`bioplaus.models._inputs`, same errors),
and the weights' finiteness is known without reading them again
(:class:`~.state.Weights`). None of it changes a number. Every public call
runs with BLAS held to one thread (:mod:`bioplaus.models._threads`): no number
depends on the caller's thread count.

Choices where the specification is silent (all documented in the core too):
training voltages and spike histories carry over from one example to the next
(as in the reference code) and across ``partial_fit`` calls; testing clears
them before each example. Plateau times (``use_rand_plateau_times``) fall
``min(int|N(0, 3)|, 5)`` steps before the phase end, clipped so that the
integration window stays inside the phase. Random phase lengths add
``int(Wald(2, 1))`` steps to ``l_f_phase`` / ``l_t_phase``. Initial weights use
``U(-1, 1)`` scaled by ``3.465 * W_sd`` (s.d. ``2 W_sd``, as the specification and
the reference code draw them); weight-optimised feedback biases are drawn like
the feedforward ones, ``0.8 + 3.465 * 0.001 * U(-1, 1)``, as in the reference.
With sparse feedback the mask is fixed and the survivors of a symmetric
(re-)imposition are multiplied by 5 once; learned feedback weights are
re-masked after every update and their survivors multiplied by 5 each time,
as the reference code does (they grow 5-fold per example, and such networks
diverge within some hundreds of examples). ``use_backprop`` uses the
feedforward weights of the layer above as already updated by the same example
(the reference code's order: updates from the output layer down).
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from bioplaus.errors import InvalidConfigurationError
from bioplaus.models import _inputs
from bioplaus.models.segdend import simulator as core
from bioplaus.models.segdend.config import ConfigCache, make_config, param_values
from bioplaus.models.segdend.state import State, Weights, slice_state, write_back
from bioplaus.models._threads import holds_one_blas_thread

__all__ = ["SegregatedDendriteClassifier"]

#: The attribute holding what repeated calls would otherwise rebuild (``_config``, ``_simulator``,
#: ``_test_streams``, ``_test_state``): one dict, filled in place (so that ``predict`` leaves
#: ``__dict__`` as it was); derived data only, emptied in pickles and rebuilt on demand.
_CACHES = "_call_caches"
#: A test state is kept between ``predict`` calls for at most this many rows and bytes.
_TEST_STATE_ROWS, _TEST_STATE_BYTES = 64, 1 << 20

class SegregatedDendriteClassifier(ClassifierMixin, BaseEstimator):
    """Segregated-dendrite network trained by its local plateau-potential rule.

    Parameters (times in steps, rates in spikes per step)
    ----------
    hidden_layer_sizes : tuple of int, units per hidden layer (0-6 layers).
    units_per_class : output units per class (``k``; class score = group mean).
    dt, l_f_phase, l_t_phase, l_f_phase_test : step size and phase lengths.
    integration_time, integration_time_test : averaging windows (last steps of
        a phase); ``None`` = :func:`settle_rule` of the phase length (for
        training, of the shorter phase).
    mem : spike memory of the PSP kernel (steps); ``None`` = ``int(10 / dt)``.
    lambda_max, tau_s, tau_L, g_B, g_A, E_E, E_I : the model's constants.
    f_etas : forward learning rate, one number or one per layer (hidden..output).
    b_etas : feedback learning rate, one number or one per hidden layer.
    use_* / noisy_symmetric_weights / update_feedback_weights : the study's
        switches; ``use_rand_phase_lengths``, ``use_rand_plateau_times`` and
        ``use_backprop`` (backpropagated hidden error) as in the paper.
    batch_size : examples simulated side by side (1 = the paper's online rule).
    epochs, shuffle : passes of :meth:`fit`, reshuffled each epoch with ``random_state``.
    dtype : ``"float32"`` (default) or ``"float64"``.
    test_batch_size : examples simulated side by side when predicting (they draw their
        spike uniforms as one batch).
    max_state_mb : bound (MiB) of the simulation state of a test batch: a batch whose
        state (spike and projection rings of ``mem`` steps per spiking source and
        pathway) would be larger is simulated in groups of rows whose state fits,
        with the same spikes (scores equal to the last bit when every pathway spikes, else
        to float32 round-off of the rate pathways' products; see ``Simulator.output_scores``).
    record_alignment : bool, default False
        Also record, per mini-batch, the angle between each hidden layer's
        weight update and the one ``use_backprop`` would have applied from the
        same simulated state (``alignment_``). Rate and spiking modes alike;
        recording changes nothing that is learnt (no random draw, no flush of
        pending updates), and when False nothing extra is computed.
    random_state : seed of initial weights, spikes, plateau times, shuffling.

    Attributes
    ----------
    W_, b_ : lists; ``W_[l]`` (n_l, n_{l-1}), ``b_[l]`` (n_l,) (layer L-1 = output). Live
        views: reading ``W_`` applies the online updates still queued (large matrices at batch 1
        queue up to 32 examples' updates, then apply them at once), so training after a read rounds differently from
        training without it. Nothing else applies them early: calls of any size, checks
        and :meth:`predict` leave the learnt numbers exactly as one call would.
    Y_, c_ : feedback weights ``Y_[l]`` (n_l, n_src) of hidden layers; biases
        ``c_`` when ``use_feedback_bias`` (else ``None``).
    classes_, n_features_in_, diverged_ (a fit produced NaN/inf; predictions at
        chance), n_examples_seen_, loss_curve_ (output local loss per batch).
    alignment_ : list of arrays of shape ``(n_hidden_layers,)``, one per
        ``partial_fit`` call (and per epoch of ``fit``) that applied at least
        one batch's update, when ``record_alignment`` is True: the mean over
        that call's mini-batches of the angle in degrees (in [0, 180]) between
        the hidden layer's weight update ``-(f_eta P_hidden / B) psp^T E_l``
        from the plateau-potential errors and the one from the backpropagated
        errors of the ``use_backprop`` control, both from the same simulated
        phases (for ``B > 1`` the summed (n_{l-1}, n_l) matrices). Batches
        where an angle is undefined (a zero update) are left out of the mean;
        NaN if all are. With ``use_backprop=True`` the angles are 0 up to
        round-off. Empty when ``record_alignment`` is False.
    alignment_batches_ : list of int, the number of mini-batches behind each
        entry of ``alignment_`` (for weighting calls into epochs).
    """

    def __init__(self, hidden_layer_sizes=(500,), units_per_class=1, dt=1.0, l_f_phase=2, l_t_phase=2,
                 l_f_phase_test=2, integration_time=None, integration_time_test=None, mem=None,
                 lambda_max=0.2, tau_s=3.0, tau_L=10.0, g_B=0.6, g_A=0.05, E_E=8.0, E_I=-8.0,
                 f_etas=0.21, b_etas=0.0, use_sparse_feedback=False, use_conductances=False,
                 use_broadcast=True, use_spiking_feedback=False, use_spiking_feedforward=False,
                 use_symmetric_weights=False, noisy_symmetric_weights=False,
                 update_feedback_weights=False, use_apical_conductance=False,
                 use_weight_optimization=True, use_feedback_bias=False, use_rand_phase_lengths=False,
                 use_rand_plateau_times=False, use_backprop=False, batch_size=1, epochs=1,
                 shuffle=True, dtype="float32", test_batch_size=500, max_state_mb=64,
                 record_alignment=False, random_state=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.units_per_class = units_per_class
        self.dt = dt
        self.l_f_phase = l_f_phase
        self.l_t_phase = l_t_phase
        self.l_f_phase_test = l_f_phase_test
        self.integration_time = integration_time
        self.integration_time_test = integration_time_test
        self.mem = mem
        self.lambda_max = lambda_max
        self.tau_s = tau_s
        self.tau_L = tau_L
        self.g_B = g_B
        self.g_A = g_A
        self.E_E = E_E
        self.E_I = E_I
        self.f_etas = f_etas
        self.b_etas = b_etas
        self.use_sparse_feedback = use_sparse_feedback
        self.use_conductances = use_conductances
        self.use_broadcast = use_broadcast
        self.use_spiking_feedback = use_spiking_feedback
        self.use_spiking_feedforward = use_spiking_feedforward
        self.use_symmetric_weights = use_symmetric_weights
        self.noisy_symmetric_weights = noisy_symmetric_weights
        self.update_feedback_weights = update_feedback_weights
        self.use_apical_conductance = use_apical_conductance
        self.use_weight_optimization = use_weight_optimization
        self.use_feedback_bias = use_feedback_bias
        self.use_rand_phase_lengths = use_rand_phase_lengths
        self.use_rand_plateau_times = use_rand_plateau_times
        self.use_backprop = use_backprop
        self.batch_size = batch_size
        self.epochs = epochs
        self.shuffle = shuffle
        self.dtype = dtype
        self.test_batch_size = test_batch_size
        self.max_state_mb = max_state_mb
        self.record_alignment = record_alignment
        self.random_state = random_state

    # ------------------------------------------------------------ config

    def _float_dtype(self):
        if str(self.dtype) not in ("float32", "float64"):
            raise InvalidConfigurationError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        return np.dtype(str(self.dtype))

    def _make_config(self, n_in, n_classes):
        """Validated :class:`~.config.Config` from the current parameters."""
        return make_config(self.get_params(deep=False), n_in, n_classes)

    def _config(self, n_in, n_classes):
        """:meth:`_make_config`, cached while the parameters it reads keep their values
        (:class:`~.config.ConfigCache`): a change by ``set_params``, by assignment or in
        place is seen at the next call."""
        try:
            values = param_values(vars(self))
        except KeyError:  # a parameter attribute is missing: let get_params say so
            return self._make_config(n_in, n_classes)
        cache = self.__dict__.setdefault(_CACHES, {}).setdefault("config", ConfigCache())
        cfg = cache.get(values, (n_in, n_classes))
        if cfg is None:
            cfg = self._make_config(n_in, n_classes)
            cache.put(values, (n_in, n_classes), cfg)
        return cfg

    def _simulator(self, cfg, dtype):
        """The :class:`~.simulator.Simulator` of ``cfg`` (the very object :meth:`_config` returned)
        and ``dtype``, kept between calls (it holds only constants and caches derived from them)."""
        caches = self.__dict__.setdefault(_CACHES, {})
        cached = caches.get("simulator")
        if cached is None or cached[0] is not cfg or cached[1] != dtype:
            cached = caches["simulator"] = (cfg, dtype, core.Simulator(cfg, dtype))
        return cached[2]

    def _test_streams(self, dtype):
        """Random streams of testing, as ``RandomStreams(default_rng(test seed), dtype)`` builds
        them afresh for every call: one object, rewound to that state at each call."""
        caches = self.__dict__.setdefault(_CACHES, {})
        cached = caches.get("test_streams")
        if cached is None or cached[0] is not self._test_seed or cached[1].dtype != dtype:
            streams = core.RandomStreams(np.random.default_rng(self._test_seed), dtype)
            cached = caches["test_streams"] = (self._test_seed, streams, streams.spike_counter,
                                               streams.rng.bit_generator.state)
        else:
            streams = cached[1]
            streams.spike_counter = cached[2]
            streams.rng.bit_generator.state = cached[3]
        return streams

    def __getstate__(self):
        state = dict(super().__getstate__())
        if _CACHES in state:
            state[_CACHES] = {}
        return state

    # ------------------------------------------------------------ fitting

    def _initialize(self, cfg, dtype):
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        init_ss, train_ss, shuffle_ss, test_ss = np.random.SeedSequence(seed).spawn(4)
        self._weights = Weights.initial(cfg, np.random.default_rng(init_ss), dtype)
        self._streams = core.RandomStreams(np.random.default_rng(train_ss), dtype)
        self._shuffle_rng = np.random.default_rng(shuffle_ss)
        self._test_seed = test_ss
        self._state = None
        self._state_key = None
        self._structure = self._structure_of(cfg, dtype)
        self.diverged_ = False
        self.n_examples_seen_ = 0
        self.loss_curve_ = []
        self.alignment_ = []
        self.alignment_batches_ = []

    def _train(self, X, y_idx, cfg):
        """One pass over ``X`` in order, ``batch_size`` examples at a time."""
        dtype = self._weights.WT[0].dtype
        B = int(self.batch_size)
        sim = self._simulator(cfg, dtype)
        k = cfg.units_per_class
        n_out = cfg.sizes[-1]
        record = [] if self.record_alignment else None  # None: no angle is computed
        self._train_batches(X, y_idx, cfg, sim, B, k, n_out, dtype, record)
        # pending low-rank updates stay queued across calls (all_finite does not apply them): where a
        # queue is cut decides the rounding, so chunks of any size train to the same numbers
        if not self.diverged_ and not self._weights.all_finite():
            self.diverged_ = True
        if record:  # mean over the batches whose angle is defined, per hidden layer
            angles = np.array(record, dtype=np.float64).reshape(len(record), cfg.n_layers - 1)
            ok = np.isfinite(angles)
            n = ok.sum(axis=0)
            self.alignment_.append(np.where(n > 0, np.where(ok, angles, 0.0).sum(axis=0) / np.maximum(n, 1),
                                            np.nan))
            self.alignment_batches_.append(len(record))

    def _train_batches(self, X, y_idx, cfg, sim, B, k, n_out, dtype, record=None):
        # teaching signals of all examples: the k output units of the class are on
        all_targets = np.zeros((X.shape[0], n_out), dtype)
        rows = np.arange(X.shape[0])
        if k == 1:
            all_targets[rows, y_idx] = 1
        else:
            for j in range(k):
                all_targets[rows, y_idx * k + j] = 1
        key = (B, cfg.sizes, cfg.mem, cfg.use_spiking_feedforward, cfg.use_spiking_feedback,
               cfg.use_broadcast)
        if self._state is not None:  # the time constants may have changed since the last call
            self._state.retime(cfg, self._weights)
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is detected, not warned
            for start in range(0, X.shape[0], B):
                if self.diverged_:
                    break
                self._train_batch(X[start:start + B], all_targets[start:start + B], cfg, sim, B, key, dtype,
                                  record)

    def _train_batch(self, xb, targets, cfg, sim, B, key, dtype, record=None):
        """One mini-batch (a final partial one on the first rows of the batch state)."""
        nb = xb.shape[0]
        if self._state is None or self._state_key != key:
            self._state = State(cfg, B, dtype)
            self._state.reproject(self._weights)
            self._state_key = key
        st = self._state
        if nb < B:  # a final partial batch runs on the first nb slots of the state
            st = slice_state(self._state, nb, cfg, dtype, self._weights)
        loss, finite = sim.train_batch(st, self._weights, xb, targets, self._streams, alignment=record)
        if nb < B:
            write_back(self._state, st, nb)
            self._state.reproject(self._weights)
        self.n_examples_seen_ += nb
        self.loss_curve_.append(loss)
        if not finite:
            self.diverged_ = True

    @staticmethod
    def _structure_of(cfg, dtype):
        """What fixes the weights' shapes: sizes, sparse masks, feedback biases, dtype, and each hidden
        layer's feedback source (``use_broadcast`` with two or more hidden layers)."""
        sources = tuple(cfg.feedback_source(l) for l in range(cfg.n_layers - 1))
        return (cfg.sizes, cfg.use_sparse_feedback, cfg.use_feedback_bias, dtype, sources)

    def _check_structure(self, cfg, dtype):
        caches = self.__dict__.setdefault(_CACHES, {})
        cached = caches.get("structure")  # the structure of the (cached, immutable) cfg object
        if cached is None or cached[0] is not cfg or cached[1] != dtype:
            cached = caches["structure"] = (cfg, dtype, self._structure_of(cfg, dtype))
        if cached[2] != self._structure:
            raise InvalidConfigurationError(
                "partial_fit cannot change the network's structure (hidden_layer_sizes, units_per_class, "
                "use_sparse_feedback, use_feedback_bias, dtype, use_broadcast with two or more hidden "
                "layers) after the first call; call fit instead")

    @holds_one_blas_thread
    def fit(self, X, y):
        """Train ``epochs`` passes over ``(X, y)``, reshuffled each epoch (X: (n, n_features) in [0, 1])."""
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float64], reset=True)
        check_classification_targets(y)
        epochs = self.epochs
        if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 0:
            raise InvalidConfigurationError(f"epochs must be a non-negative integer, got {epochs!r}")
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        dtype = self._float_dtype()
        cfg = self._config(X.shape[1], len(self.classes_))
        self._initialize(cfg, dtype)
        X = np.asarray(X, dtype=dtype)
        for _ in range(int(epochs)):
            order = self._shuffle_rng.permutation(X.shape[0]) if self.shuffle else np.arange(X.shape[0])
            self._train(X[order], y_idx[order], cfg)
            if self.diverged_:
                break
        return self

    @holds_one_blas_thread
    def partial_fit(self, X, y, classes=None):
        """One pass over ``(X, y)`` in the given order (no shuffling), from the current weights.

        ``classes`` is required on the first call. Parameters changed with
        ``set_params`` between calls (rates, phase lengths, switches that do not
        change the weight shapes) apply from this call on.
        """
        first, X, y_idx = _inputs.partial_fit_rows(self, X, y, classes)
        dtype = self._float_dtype()
        cfg = self._config(X.shape[1], len(self.classes_))
        if first:
            self._initialize(cfg, dtype)
        else:
            self._check_structure(cfg, dtype)
        if not self.diverged_:
            self._train(np.asarray(X, dtype=dtype), y_idx, cfg)
        return self

    # ------------------------------------------------------------ prediction

    def _test_config(self):
        return self._config(self.n_features_in_, len(self.classes_))

    @holds_one_blas_thread
    def class_scores(self, X):
        """Mean somatic potential of each class's output units over the test window, ``(n, n_classes)``."""
        return self._class_scores(X)

    def _class_scores(self, X):
        if not hasattr(self, "classes_"):
            check_is_fitted(self, "classes_")
        X = _inputs.rows(self, X)
        n_classes = len(self.classes_)
        if self.diverged_:
            return np.zeros((X.shape[0], n_classes))
        cfg = self._test_config()
        dtype = self._weights.WT[0].dtype
        sim = self._simulator(cfg, dtype)
        streams = self._test_streams(dtype)
        X = np.asarray(X, dtype=dtype)
        chunk = self._test_chunk(cfg)
        state_bytes = self._state_bytes()
        weights = self._applied_weights()
        out = np.empty((X.shape[0], n_classes), dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            for s in range(0, X.shape[0], chunk):
                rows = X[s:s + chunk]
                C = sim.output_scores(weights, rows, streams, self._test_state(sim, rows.shape[0]),
                                      max_state_bytes=state_bytes)
                if cfg.units_per_class == 1:  # the mean of one value is that value, bit for bit
                    out[s:s + chunk] = C
                else:
                    out[s:s + chunk] = C.reshape(C.shape[0], n_classes, cfg.units_per_class).mean(axis=2)
        return out

    def _applied_weights(self):
        """The weights with their pending updates applied (:meth:`Weights.applied`), formed once per
        trained state: kept until the next example is learnt (or the weights are replaced)."""
        caches = self.__dict__.setdefault(_CACHES, {})
        key = (self.n_examples_seen_, len(self.loss_curve_))
        cached = caches.get("applied")
        if cached is None or cached[0] is not self._weights or cached[1] != key:
            cached = caches["applied"] = (self._weights, key, self._weights.applied())
        return cached[2]

    def _test_state(self, sim, n):
        """A test state of ``sim`` for ``n`` rows kept between calls when it is small
        (at most ``_TEST_STATE_BYTES``: calls on a few rows), else None (a new one per call)."""
        caches = self.__dict__.setdefault(_CACHES, {})
        cached = caches.get("test_state")
        if cached is not None and cached[0] is sim and cached[1] == n:
            return cached[2]
        if n > _TEST_STATE_ROWS:
            return None
        st = sim.test_state(n)
        if st.nbytes() > _TEST_STATE_BYTES:
            return None
        caches["test_state"] = (sim, n, st)
        return st

    def _test_chunk(self, cfg):
        """Rows of a test batch: ``test_batch_size``, fewer when the spike memory is long."""
        return max(1, min(int(self.test_batch_size), int(4e7 // max(1, cfg.mem * max(cfg.sizes)))))

    def _state_bytes(self):
        """``max_state_mb`` (validated by the config) in bytes."""
        return max(1, int(float(self.max_state_mb) * 2**20))

    @holds_one_blas_thread
    def predict(self, X):
        """Class with the largest mean output potential (at chance, uniformly at random, if diverged)."""
        scores = self._class_scores(X)
        if self.diverged_:
            rng = np.random.default_rng(0)
            return self.classes_[rng.integers(len(self.classes_), size=scores.shape[0])]
        if np.isnan(scores).any():
            scores = np.nan_to_num(scores, nan=-np.inf)
        return self.classes_[np.argmax(scores, axis=1)]

    @holds_one_blas_thread
    def predict_proba(self, X):
        """Softmax of :meth:`class_scores` (a ranking of classes, not calibrated probabilities)."""
        scores = self._class_scores(X)
        scores = np.nan_to_num(scores - scores.max(axis=1, keepdims=True), nan=0.0, neginf=-1e3)
        e = np.exp(scores)
        return e / e.sum(axis=1, keepdims=True)

    # ------------------------------------------------------------ fitted weights (paper orientation)

    @property
    @holds_one_blas_thread  # applies pending updates (BLAS)
    def W_(self):
        check_is_fitted(self, "classes_")
        # live views, as scikit-learn's coefs_: the pending updates are applied first, which fixes where
        # their queue is cut (training after a read rounds differently from training without one)
        self._weights.flush()
        self._weights.touched()  # views of the weights go out: their bounds cannot be trusted
        self.__dict__.get(_CACHES, {}).pop("applied", None)  # nor a copy formed before a write through them
        return [w.T for w in self._weights.WT]

    @property
    def b_(self):
        check_is_fitted(self, "classes_")
        return list(self._weights.b)

    @property
    def Y_(self):
        check_is_fitted(self, "classes_")
        return [y.T for y in self._weights.YT]

    @property
    def c_(self):
        check_is_fitted(self, "classes_")
        return None if not self._weights.c or self._weights.c[0] is None else list(self._weights.c)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags
