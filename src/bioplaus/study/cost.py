"""The cost of a study before it runs: work counts of search-space points, their calibration, the prediction.

This module owns four things:

* **Drawing points as the study does** (:func:`draw_points`, :func:`valid_points`):
  draw ``d`` of a model's space is what the ``random`` sampler of a study
  seeded ``seed`` suggests at draw index ``d`` (the same seeds,
  :func:`~bioplaus.study.seeds.derive_seed`, and optuna's ``RandomSampler``),
  and a point is *invalid* exactly when the study finds it so: building the
  estimator, or the model's own validation (CNN geometry,
  :func:`~bioplaus.models.cnn.estimator.check_geometry`; segregated-dendrite
  configuration, :func:`~bioplaus.models.segdend.config.make_config`), raises
  :class:`~bioplaus.errors.InvalidConfigurationError`.
* **Work counts** (:func:`point_work`): for one valid point, the floating-point
  operations, the bytes of weights and state that must move and the random
  numbers that must be drawn, per training example and per test example, at
  the batch sizes the point trains and tests with. They are read off the
  estimator the registry builds (so the layer sizes come from the models' own
  helpers: :func:`~bioplaus.models.architecture.hidden_sizes` through
  ``build``, the CNN's ``feature_map_shapes``, segdend's ``make_config`` and
  ``State``), not restated. :attr:`Work.units` (multiply-add equivalents: half
  the flops, plus one per random number) is the scalar the calibration fits;
  :func:`roofline_seconds` turns the three counts into a lower bound of the
  time with the machine's measured rates (:func:`machine_rates`).
* **Calibration** (:func:`time_point`, :func:`calibrate`): single-threaded CPU
  time (``time.process_time``) per training and per test example of a handful
  of points on a few hundred real rows, and per model a fit
  ``seconds per example = a * units + c`` (``a, c >= 0``, relative least
  squares) with the spread of the points about it (s.d. of the log ratio).
* **Prediction** (:func:`predict_study`): for a validated config, the jobs the
  workflow creates (``workflow/rules/*.smk``: one study per dataset x model x
  sampler with ``n_trials`` valid trials of ``n_folds`` folds x ``epochs``
  epochs, split over ``workers`` jobs; the noise floor's ``repeats``
  re-evaluations of the default and each sampler's best; the first fold of
  each of those sources for models that record alignment; with several
  datasets, ``max(1, repeats)`` refits of each other dataset's best), their
  CPU seconds, and the wall time on ``cores`` cores by list scheduling of the
  jobs (each reserving its ``threads``, at most ``cores``; folds of a trial run
  in ``min(threads, n_folds)`` processes). Invalid draws cost nothing and do
  not count towards ``n_trials``. The ``random`` sampler's trials are its exact
  draws; ``gp`` and ``tpe`` trials, and the unknown best configurations, are
  drawn uniformly from the valid points (a model-based sampler concentrates
  where accuracy is high, which may be cheaper or dearer). The interval is
  p10-p90 over Monte-Carlo repetitions that redraw those trials and the
  calibration's errors (a per-trial error of the fit's spread, and a
  per-model error of the fit's coefficient, spread / sqrt(points)).

What is not counted: data preparation, the analysis and figure jobs (single
threaded, seconds to minutes), one-off kernel compilation, and training cut
short by divergence (a diverged fold stops early, so the prediction is an
upper estimate for spaces that diverge often). One epoch of a fold trains on
``(n_folds - 1) / n_folds`` of the images and tests on the rest after every
epoch, as :func:`~bioplaus.study.evaluation.run_fold` does.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from bioplaus.errors import ConfigError, InvalidConfigurationError
from bioplaus.models.registry import get_model
from bioplaus.study.evaluation import PREDICT_CHUNK_ROWS
from bioplaus.study.samplers import SAMPLER_STREAMS, draw_seed

__all__ = [
    "Work", "PointWork", "draw_points", "valid_points", "point_work", "machine_rates", "roofline_seconds",
    "time_point", "fold_cpu_seconds", "evaluation_cpu_seconds", "Fit", "ModelCalibration", "Calibration",
    "calibrate", "Job", "schedule_wall", "StudyPrediction", "predict_study",
]

#: Mean pixel intensity assumed for input spike rates when none is given (Fashion-MNIST's is
#: about 0.29, MNIST's 0.13); :func:`calibrate` passes the calibration rows' own mean.
DEFAULT_INPUT_MEAN = 0.29
#: Fraction of ``lambda_max`` at which a hidden or output neuron fires, for the expected number of
#: spiking sources a step projects (sigmoid(C) is 0.5 at C = 0 and about 0.95 at the
#: weight-optimised initial mean potential of 3).
HIDDEN_RATE_FRACTION = 0.5
#: Steps of a phase that do work when nothing forces every step (rate mode without conductances):
#: the first settles the layers bottom-up, the second the feedback computed before the layers above
#: it moved, the third finds nothing changed and the simulator fast-forwards the rest.
RATE_LIVE_STEPS = 3
#: Elementwise flops per neuron and simulated step of segdend (somatic update, sigmoid rate, window
#: sums) and per unit of a dense layer (bias, nonlinearity and its derivative, error product).
SEGDEND_UNIT_FLOPS = 12
DENSE_UNIT_FLOPS = 6
#: Flops per random number turned into a spike (two comparisons with the Poisson CDF).
SAMPLE_FLOPS = 4
#: Per parameter and update: flops and array passes (reads + writes) of Adam (read p, g, m, v; write
#: p, m, v) and of SGD with momentum (read p, g, v; write p, v) or without (read p, g; write p).
ADAM_FLOPS, ADAM_PASSES = 12, 7
MOMENTUM_FLOPS, MOMENTUM_PASSES = 4, 5
SGD_FLOPS, SGD_PASSES = 2, 3
#: Calibration points are drawn at evenly spaced ranks of the work of valid candidates up to this
#: quantile (the slowest tenth is left out so that calibration stays short).
CALIBRATION_TOP_QUANTILE = 0.9
#: Points timed per model by default. With 6, the segdend fit scattered by a factor of 4 on a
#: 2-core AMD EPYC and the paper study's p10-p90 spanned 600-2,060 CPU-hours; with 10, by 2.1-2.3
#: and 500-780, for some 10 CPU seconds more.
CALIBRATION_POINTS = 10


# --------------------------------------------------------------------------- drawing points


def draw_points(model: str, seed: int, draws: int | Sequence[int], options: Mapping[str, Any] | None = None
                ) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(draw, params)`` for each draw index: what a ``random``-sampler study seeded ``seed`` suggests.

    The study's :class:`~bioplaus.study.samplers.PerTrialSeededSampler` gives
    draw ``d`` an optuna ``RandomSampler`` seeded
    ``draw_seed(seed, SAMPLER_STREAMS["random"], d)``, which draws
    every parameter of the space in its declared order; so does this.
    ``draws``: a count (indices 0 .. draws - 1) or the indices.
    """
    from optuna.samplers import RandomSampler

    space = get_model(model).search_space(dict(options or {}))
    indices = range(int(draws)) if isinstance(draws, (int, np.integer)) else draws
    for d in indices:
        sampler = RandomSampler(seed=draw_seed(seed, SAMPLER_STREAMS["random"], d))
        yield int(d), {name: sampler.sample_independent(None, None, name, dist) for name, dist in space.items()}


# --------------------------------------------------------------------------- work counts


@dataclass(frozen=True)
class Work:
    """Work of one example: ``flops`` (a multiply-add is 2), ``bytes`` of weights and state moved,
    ``randoms`` drawn. ``units``: the calibrated scalar, multiply-add equivalents."""

    flops: float = 0.0
    bytes: float = 0.0
    randoms: float = 0.0

    @property
    def units(self) -> float:
        return self.flops / 2.0 + self.randoms

    def __add__(self, other: "Work") -> "Work":
        return Work(self.flops + other.flops, self.bytes + other.bytes, self.randoms + other.randoms)

    def scaled(self, f: float) -> "Work":
        return Work(self.flops * f, self.bytes * f, self.randoms * f)


@dataclass(frozen=True)
class PointWork:
    """Work per training example and per test example of one point, and the batches it assumes.
    ``counted``: False for a model this module has no count for (then ``units`` is 1 per example
    and the calibration fits plain seconds per example)."""

    train: Work
    test: Work
    train_batch: int
    test_batch: int
    counted: bool = True


def _dense_layer_sizes(n_in, hidden, n_out):
    return (int(n_in), *(int(h) for h in hidden), int(n_out))


def _dense_work(sizes, *, batch, test_batch, itemsize, feedback, update_flops, update_passes, extra_train=Work()):
    """Work of a fully connected network trained by a backprop-like rule.

    ``feedback``: ``(multiply-adds, matrix entries read)`` per example of sending the error down
    (through ``W^T``, fixed random matrices or the output error directly).
    """
    M = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))   # weights
    P = M + sum(sizes[1:])                                  # parameters (with biases)
    A = sum(sizes[1:])                                      # units after the input
    fb_macs, fb_entries = feedback
    s = float(itemsize)
    # forward (2M), error propagation, weight gradients (2M); the per-batch update and the reads of
    # the weights (forward), feedback matrices (backward) and gradients (written once) are shared by
    # the batch; activations are written forward and read back
    train = Work(
        flops=4.0 * M + 2.0 * fb_macs + DENSE_UNIT_FLOPS * A + update_flops * P / batch,
        bytes=s * ((M + fb_entries + P + update_passes * P) / batch + sizes[0] + 5 * A),
    ) + extra_train
    test = Work(flops=2.0 * M + 2 * A, bytes=s * (P / test_batch + sizes[0] + 2 * A))
    return train, test


def _rate_network_work(est, n_in, n_classes, train_rows, test_rows):
    from bioplaus.models._rate_network import PREDICT_CHUNK
    from bioplaus.models.burstprop import BurstpropClassifier
    from bioplaus.models.feedback_alignment import DirectFeedbackAlignmentClassifier

    hidden = est._validate_common()  # the estimator's own checks of structure and rates
    sizes = _dense_layer_sizes(n_in, hidden, n_classes)
    itemsize = est._float_dtype().itemsize
    batch = max(1, min(int(est.batch_size), train_rows))
    test_batch = max(1, min(PREDICT_CHUNK, test_rows))
    momentum = float(est.momentum) > 0
    upd_flops, upd_passes = (MOMENTUM_FLOPS, MOMENTUM_PASSES) if momentum else (SGD_FLOPS, SGD_PASSES)
    L = len(sizes) - 1
    extra = Work()
    if isinstance(est, DirectFeedbackAlignmentClassifier):  # e @ B_l: output error to every hidden layer
        fb = sum(sizes[-1] * sizes[l + 1] for l in range(L - 1))
        feedback = (fb, fb)
    elif isinstance(est, BurstpropClassifier):  # free and teaching burst rates through Y, top down
        fb = sum(sizes[l + 2] * sizes[l + 1] for l in range(L - 1))
        feedback = (2 * fb, 2 * fb)
        if est.recurrent_input:  # b_hat @ Z per example, b_hat^T u and the Z update per batch
            Z = sum(n * n for n in sizes[1:-1])
            extra = Work(flops=4.0 * Z + 2.0 * Z / batch, bytes=itemsize * (Z + 3.0 * Z) / batch)
    else:  # feedback alignment and sign symmetry: through matrices shaped like W_{l+1}^T
        fb = sum(sizes[l + 1] * sizes[l + 2] for l in range(L - 1))
        feedback = (fb, fb)
        if hasattr(est, "_sign_scale"):  # sign symmetry refreshes sign(W)^T after every update
            extra = Work(flops=2.0 * fb / batch, bytes=itemsize * 2.0 * fb / batch)
    train, test = _dense_work(sizes, batch=batch, test_batch=test_batch, itemsize=itemsize, feedback=feedback,
                              update_flops=upd_flops, update_passes=upd_passes, extra_train=extra)
    return PointWork(train, test, batch, test_batch)


def _mlp_work(est, n_in, n_classes, train_rows, test_rows):
    sizes = _dense_layer_sizes(n_in, est.hidden_layer_sizes, n_classes)
    batch = max(1, min(int(est.batch_size), train_rows))   # MLPClassifier: min(batch_size, rows)
    test_batch = max(1, test_rows)                          # predict: all rows of the call at once
    fb = sum(sizes[l + 1] * sizes[l + 2] for l in range(len(sizes) - 2))
    train, test = _dense_work(sizes, batch=batch, test_batch=test_batch, itemsize=4, feedback=(fb, fb),  # float32 rows: float32 weights
                              update_flops=ADAM_FLOPS, update_passes=ADAM_PASSES)
    return PointWork(train, test, batch, test_batch)


def _cnn_work(est, input_shape, n_classes, train_rows, test_rows):
    from bioplaus.models.cnn._network import feature_map_shapes
    from bioplaus.models.cnn.estimator import check_geometry

    channels, kernels = est._check_hyperparameters()
    stride, padding = int(est.stride), int(est.padding)
    check_geometry(tuple(input_shape), channels, kernels, stride, padding)  # invalid geometry raises
    shapes = feature_map_shapes(tuple(input_shape), channels, kernels, stride, padding)
    batch = max(1, min(int(est.batch_size), train_rows))
    test_batch = max(1, min(int(est.predict_batch_size or test_rows), test_rows))
    s = 4.0
    c_in, h, w = input_shape
    train_f = train_b = test_f = test_b = 0.0
    params = 0
    for i, ((ch, cw, ph, pw, f), k) in enumerate(zip(shapes, kernels)):
        macs = ch * cw * k * k * c_in * f          # convolution as one im2col product
        patch = ch * cw * k * k * c_in             # im2col entries
        out = ch * cw * f                          # convolution output
        first = i == 0
        # training: forward, weight gradient, input gradient (not for the first block)
        train_f += 2.0 * macs * (2 if first else 3) + 20.0 * out
        # patches written and read forward, read for dW, and (dX) written and scattered back;
        # feature maps through batch norm, ReLU and pooling forward and back
        train_b += s * (patch * (3 if first else 5) + h * w * c_in + 15.0 * out)
        test_f += 2.0 * macs + 6.0 * out
        test_b += s * (2.0 * patch + h * w * c_in + 4.25 * out)
        params += k * k * c_in * f + 2 * f
        c_in, h, w = f, ph, pw
    n_feat = h * w * c_in
    params += n_feat * n_classes + n_classes
    train_f += 6.0 * n_feat * n_classes + ADAM_FLOPS * params / batch
    train_b += s * (3.0 * params + ADAM_PASSES * params) / batch
    test_f += 2.0 * n_feat * n_classes
    test_b += s * params / test_batch
    return PointWork(Work(train_f, train_b), Work(test_f, test_b), batch, test_batch)


def _rows_read(active, rows):
    """Per example, the share of a weight matrix's rows a spike projection reads: a source's row is
    read once for all ``rows`` examples of the batch that spiked on it (``_kernel._project``)."""
    return (1.0 - (1.0 - active) ** rows) / rows


def _segdend_phase(cfg, st, L, *, new_input, batch, itemsize, input_mean, collect_psp, deferred, defer_rank):
    """Work per example of one phase of ``L`` steps (see :mod:`bioplaus.models.segdend.simulator`)."""
    s = float(itemsize)
    sizes, nL = cfg.sizes, cfg.n_layers
    cond = cfg.use_conductances
    spiking = any(st.spiking_src)
    live = L if (cond or spiking) else min(L, RATE_LIVE_STEPS)
    lam = cfg.lambda_max
    # expected share of each source (0 = input, l + 1 = layer l) emitting a spike in a step
    active = [1.0 - math.exp(-lam * input_mean)] + [1.0 - math.exp(-lam * HIDDEN_RATE_FRACTION)] * nL
    flops = byts = 0.0
    for l in range(nL):
        n_src, n = sizes[l], sizes[l + 1]
        if st.ff[l].spiking:  # spikes of the source projected into a ring, two PSP traces advanced
            macs = L * active[l] * n_src * n
            flops += 2.0 * macs + L * 8.0 * n
            byts += s * (L * _rows_read(active[l], batch) * n_src * n + L * 6.0 * n)
        else:  # the drive is recomputed when the source's rates changed
            if l == 0 or not cond:
                recomputes = 1.0 if new_input else 0.0
            else:
                recomputes = float(live)
            pend = deferred[l] * 0.5 * defer_rank * (n_src + n)  # pending low-rank update (mean rank)
            flops += recomputes * 2.0 * (n_src * n + pend)
            byts += recomputes * s * (n_src * n / batch + n_src + n)
        if l < nL - 1 and st.apical:  # apical compartment, from the feedback source
            n_fb = sizes[cfg.feedback_source(l) + 1]
            if st.fb[l].spiking:
                a = active[cfg.feedback_source(l) + 1]
                flops += 2.0 * L * a * n_fb * n + L * 8.0 * n
                byts += s * (L * _rows_read(a, batch) * n_fb * n + L * 6.0 * n)
            else:
                recomputes = float(live) if cond else 1.0
                flops += recomputes * 2.0 * n_fb * n
                byts += recomputes * s * (n_fb * n / batch + n_fb + n)
        flops += live * SEGDEND_UNIT_FLOPS * n
        byts += live * s * 4.0 * n
        if collect_psp and st.ff[l].spiking:  # spikes of the source enter the mean PSP
            flops += L * n_src
    randoms = float(st.u_per_step) * L  # one uniform per spiking source neuron and step (batch 1 state)
    flops += SAMPLE_FLOPS * randoms
    byts += s * randoms  # spike counts written to the history ring
    return Work(flops, byts, randoms)


def _segdend_work(est, n_in, n_classes, train_rows, test_rows, input_mean):
    from bioplaus.models.segdend.config import WALD_MEAN, make_config
    from bioplaus.models.segdend.state import DEFER_MIN_SIZE, DEFER_RANK, State

    cfg = make_config(est.get_params(), n_in, n_classes)  # the estimator's validation: raises when invalid
    dtype = np.dtype(est.dtype)
    s = float(dtype.itemsize)
    batch = max(1, min(int(est.batch_size), train_rows))
    test_batch = max(1, min(int(est.test_batch_size), test_rows))
    sizes, nL = cfg.sizes, cfg.n_layers
    train_state = State(cfg, 1, dtype, apical=True)
    # testing simulates apical compartments only when they reach the soma (Simulator.output_scores)
    test_state = State(cfg, 1, dtype, apical=cfg.use_conductances and cfg.use_apical_conductance)
    defer = batch == 1 and not (cfg.use_spiking_feedforward or cfg.use_backprop or cfg.use_symmetric_weights)
    deferred = [1.0 if defer and sizes[l] * sizes[l + 1] >= DEFER_MIN_SIZE else 0.0 for l in range(nL)]
    extra = WALD_MEAN if cfg.use_rand_phase_lengths else 0.0
    common = dict(batch=batch, itemsize=s, input_mean=input_mean, deferred=deferred, defer_rank=DEFER_RANK)
    train = (_segdend_phase(cfg, train_state, cfg.l_f_phase + extra, new_input=True, collect_psp=True, **common)
             + _segdend_phase(cfg, train_state, cfg.l_t_phase + extra, new_input=False, collect_psp=False, **common))
    # local errors and updates: a rank-1 (rank-B) product per feedforward matrix, queued (DEFER_RANK
    # at a time) or applied in place; learned feedback likewise
    upd_f = upd_b = upd_r = 0.0
    for l in range(nL):
        entries = sizes[l] * sizes[l + 1]
        upd_f += 2.0 * entries + 12.0 * sizes[l + 1]
        if deferred[l]:
            upd_b += s * (sizes[l] + sizes[l + 1] + 2.0 * entries / DEFER_RANK)
        else:
            upd_b += s * 2.0 * entries / batch
    for l in range(nL - 1):
        n_fb, n = sizes[cfg.feedback_source(l) + 1], sizes[l + 1]
        if cfg.update_feedback_weights:
            upd_f += 2.0 * n_fb * n
            upd_b += s * (2.0 + (3.0 if cfg.use_sparse_feedback else 0.0)) * n_fb * n / batch
        if cfg.use_symmetric_weights:  # feedback re-imposed from the forward weights after every update
            upd_b += s * 2.0 * n_fb * n / batch
            if cfg.noisy_symmetric_weights:  # N(0, 0.05) noise: a matrix under broadcast, else a number
                upd_r += (sizes[l + 2] * n if cfg.use_broadcast else 1.0) / batch
            if cfg.use_broadcast and l < nL - 2:
                upd_f += 2.0 * sizes[-1] * sizes[l + 2] * n / batch
    # after each update the spike rings follow the new weights (State.reproject): a rank-batch
    # correction of the ring where the matrix moved by the learning rule, every spike projected again
    # where it was replaced (symmetric feedback, sparse masks), nothing where it did not move
    mem = cfg.mem
    active_hidden = 1.0 - math.exp(-cfg.lambda_max * HIDDEN_RATE_FRACTION)
    active_in = 1.0 - math.exp(-cfg.lambda_max * input_mean)

    def ring_work(n_src, n, a, replaced):
        if replaced:
            return Work(2.0 * mem * a * n_src * n, s * (mem * _rows_read(a, mem * batch) * n_src * n + mem * n))
        # (mem B, n_src) @ (n_src, B) then a rank-B update of the (mem B, n) ring, per example
        return Work(2.0 * mem * batch * (n_src + n) + 4.0 * mem * n,
                    s * (mem * n_src + 2.0 * mem * n + 2.0 * mem * n))
    ring = Work()
    for l, p in enumerate(train_state.ff):
        if p.spiking:
            ring = ring + ring_work(sizes[l], sizes[l + 1], active_in if l == 0 else active_hidden, False)
    for l, q in enumerate(train_state.fb):
        if q.spiking:
            replaced = cfg.use_symmetric_weights or (cfg.update_feedback_weights and cfg.use_sparse_feedback)
            if replaced or cfg.update_feedback_weights:
                ring = ring + ring_work(sizes[cfg.feedback_source(l) + 1], sizes[l + 1], active_hidden, replaced)
    upd_f += ring.flops
    upd_b += ring.bytes
    train = train + Work(upd_f, upd_b, upd_r)
    test = _segdend_phase(cfg, test_state, cfg.l_f_phase_test, new_input=True, collect_psp=False,
                          batch=test_batch, itemsize=s, input_mean=input_mean, deferred=[0.0] * nL,
                          defer_rank=DEFER_RANK)
    if any(test_state.spiking_src):  # a fresh state per call: spike histories cleared
        test = test + Work(0.0, s * mem * sum(n for n, on in zip(sizes, test_state.spiking_src) if on))
    return PointWork(train, test, batch, test_batch)


def point_work(model: str, params: Mapping[str, Any], *, input_shape, n_classes: int,
               options: Mapping[str, Any] | None = None, train_rows: int | None = None,
               test_rows: int | None = None, input_mean: float = DEFAULT_INPUT_MEAN) -> PointWork:
    """Work per training and per test example of one point (raises
    :class:`~bioplaus.errors.InvalidConfigurationError` for an invalid one).

    ``train_rows`` / ``test_rows``: rows per ``partial_fit`` / ``predict`` call
    (they cap the batches; None: the study's, unbounded training batches and
    :data:`~bioplaus.study.evaluation.PREDICT_CHUNK_ROWS` test rows).
    ``input_mean``: mean pixel value, for input spike rates. The estimator is
    the one the registry builds; its class decides the count (a plugin using
    one of the built-in estimators is counted; any other estimator gets one
    unit per example, ``counted=False``).
    """
    from sklearn.neural_network import MLPClassifier

    from bioplaus.models._rate_network import RateNetworkClassifier
    from bioplaus.models.cnn.estimator import CNNClassifier
    from bioplaus.models.segdend.estimator import SegregatedDendriteClassifier

    spec = get_model(model)
    input_shape = tuple(int(v) for v in input_shape)
    est = spec.build(dict(params), input_shape=input_shape, n_classes=int(n_classes), epochs=1,
                     random_state=0, options=dict(options or {}))
    n_in = int(np.prod(input_shape))
    train_rows = int(train_rows) if train_rows else 1 << 62
    test_rows = int(test_rows) if test_rows else PREDICT_CHUNK_ROWS
    if isinstance(est, SegregatedDendriteClassifier):
        return _segdend_work(est, n_in, n_classes, train_rows, test_rows, float(input_mean))
    if isinstance(est, CNNClassifier):
        return _cnn_work(est, input_shape, n_classes, train_rows, test_rows)
    if isinstance(est, RateNetworkClassifier):
        return _rate_network_work(est, n_in, n_classes, train_rows, test_rows)
    if isinstance(est, MLPClassifier):
        return _mlp_work(est, n_in, n_classes, train_rows, test_rows)
    one = Work(flops=2.0)  # one unit per example
    return PointWork(one, one, 1, 1, counted=False)


def valid_points(model: str, seed: int, n: int, *, input_shape, n_classes: int,
                 options: Mapping[str, Any] | None = None, max_draws: int | None = None, **work_kwargs
                 ) -> tuple[list[tuple[int, dict, PointWork]], int]:
    """The first ``n`` valid draws ``(draw, params, work)`` of a random-sampler study, and the draws it took.

    Stops after ``max_draws`` draws (default ``50 * n``) with fewer points when the
    space is mostly invalid for this input shape.
    """
    out, draws = [], 0
    limit = int(max_draws) if max_draws is not None else 50 * max(1, int(n))
    d = 0
    while len(out) < n and d < limit:
        _, params = next(draw_points(model, seed, [d], options))
        draws = d + 1
        try:
            work = point_work(model, params, input_shape=input_shape, n_classes=n_classes, options=options,
                              **work_kwargs)
        except InvalidConfigurationError:
            d += 1
            continue
        out.append((d, params, work))
        d += 1
    return out, draws


# --------------------------------------------------------------------------- machine rates, roofline


def machine_rates(*, copy_mb: float = 128.0, gemm_n: int = 1024, n_randoms: int = 10_000_000,
                  repeats: int = 3) -> dict[str, float]:
    """This machine's single-thread rates (best of ``repeats``):

    ``memory_bytes_per_s``: bytes read plus written per second by ``numpy.copyto``
    of a ``copy_mb`` MB float32 array (far larger than the caches);
    ``gemm_flops_per_s``: flops per second of a ``gemm_n`` x ``gemm_n`` float32
    matrix product (``2 n^3`` flops), BLAS held to one thread;
    ``randoms_per_s``: float32 uniforms per second of ``numpy.random.Generator.random``.
    """
    from threadpoolctl import threadpool_limits

    n = max(1, int(copy_mb * 2**20 / 4))
    src = np.ones(n, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best_copy = min(_timed(lambda: np.copyto(dst, src)) for _ in range(repeats))
    a = np.random.default_rng(0).random((gemm_n, gemm_n), dtype=np.float32)
    b = np.random.default_rng(1).random((gemm_n, gemm_n), dtype=np.float32)
    c = np.empty_like(a)
    with threadpool_limits(limits=1):
        np.matmul(a, b, out=c)
        best_gemm = min(_timed(lambda: np.matmul(a, b, out=c)) for _ in range(repeats))
    gen = np.random.default_rng(0)
    out = np.empty(int(n_randoms), np.float32)
    gen.random(out=out, dtype=np.float32)
    best_rng = min(_timed(lambda: gen.random(out=out, dtype=np.float32)) for _ in range(repeats))
    return {
        "memory_bytes_per_s": 2.0 * src.nbytes / best_copy,
        "gemm_flops_per_s": 2.0 * gemm_n**3 / best_gemm,
        "randoms_per_s": out.size / best_rng,
    }


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return max(time.perf_counter() - t, 1e-12)


def roofline_seconds(work: Work, rates: Mapping[str, float]) -> float:
    """Lower bound of the time of ``work``: bytes / bandwidth + flops / GEMM rate + randoms / generator rate."""
    return (work.bytes / rates["memory_bytes_per_s"] + work.flops / rates["gemm_flops_per_s"]
            + work.randoms / rates["randoms_per_s"])


# --------------------------------------------------------------------------- timing


def time_point(model: str, params: Mapping[str, Any], X_train: np.ndarray, y_train: np.ndarray,
               X_test: np.ndarray, *, input_shape, classes, options: Mapping[str, Any] | None = None,
               seed: int = 0) -> dict[str, Any]:
    """Single-threaded CPU seconds per training and per test example of one point.

    Builds the estimator as a fold does, runs the model's warm-up (kernel
    compilation, untimed, as before a fold's clock), trains one untimed
    ``partial_fit`` on the first tenth of the rows (initialisation), then times
    one ``partial_fit`` over all of ``X_train`` and one ``predict`` over
    ``X_test`` with ``time.process_time`` under a one-thread BLAS limit.
    Raises :class:`~bioplaus.errors.InvalidConfigurationError` for an invalid
    point. Returns ``train_s``, ``test_s`` (per example) and ``diverged``
    (training stopped early: its time is not the point's).
    """
    from threadpoolctl import threadpool_limits

    spec = get_model(model)
    classes = np.asarray(classes)
    with threadpool_limits(limits=1), np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MLPClassifier: a batch larger than the rows is clipped
        est = spec.build(dict(params), input_shape=tuple(input_shape), n_classes=len(classes), epochs=1,
                         random_state=int(seed), options=dict(options or {}))
        if spec.warm_up is not None:
            spec.warm_up(est, X_train[:2], y_train[:2], classes)
        first = max(1, len(X_train) // 10)
        est.partial_fit(X_train[:first], y_train[:first], classes=classes)
        c0 = time.process_time()
        est.partial_fit(X_train, y_train, classes=classes)
        train = time.process_time() - c0
        c0 = time.process_time()
        est.predict(X_test)
        test = time.process_time() - c0
    diverged = bool(getattr(est, "diverged_", False))
    return {"train_s": train / len(X_train), "test_s": test / len(X_test), "diverged": diverged}


def fold_cpu_seconds(train_s: float, test_s: float, n_samples: int, n_folds: int, epochs: int) -> float:
    """CPU seconds of one fold: ``epochs`` passes over ``(k-1)/k`` of the rows, each followed by a test
    of the other ``1/k`` (per-example seconds ``train_s``, ``test_s``)."""
    n_test = n_samples / n_folds
    return epochs * ((n_samples - n_test) * train_s + n_test * test_s)


def evaluation_cpu_seconds(train_s: float, test_s: float, n_samples: int, n_folds: int = 3,
                           epochs: int = 10) -> float:
    """CPU seconds of one cross-validated evaluation (``n_folds`` folds, :func:`fold_cpu_seconds` each)."""
    return n_folds * fold_cpu_seconds(train_s, test_s, n_samples, n_folds, epochs)


# --------------------------------------------------------------------------- calibration


@dataclass
class Fit:
    """``seconds per example = per_unit * units + per_example``; ``log_sd``: s.d. of
    ``log(measured / fitted)`` over the ``n`` points (0 when fewer than 3)."""

    per_unit: float
    per_example: float
    log_sd: float
    n: int

    def seconds(self, units):
        return self.per_unit * np.asarray(units, dtype=float) + self.per_example

    @classmethod
    def from_points(cls, units: Sequence[float], seconds: Sequence[float]) -> "Fit":
        from scipy.optimize import nnls

        u, t = np.asarray(units, float), np.asarray(seconds, float)
        keep = (u > 0) & (t > 0) & np.isfinite(u) & np.isfinite(t)
        u, t = u[keep], t[keep]
        if len(u) == 0:
            raise ConfigError("calibration: no point was timed (all invalid, diverged or too fast to measure)")
        if len(u) < 3:  # too few to separate a fixed cost from the work
            a, c = float(np.exp(np.mean(np.log(t / u)))), 0.0
        else:  # relative least squares, a and c non-negative
            (a, c), _ = nnls(np.column_stack([u / t, 1.0 / t]), np.ones_like(t))
            if a <= 0:
                a, c = float(np.exp(np.mean(np.log(t / u)))), 0.0
        pred = a * u + c
        sd = float(np.sqrt(np.sum(np.log(t / pred) ** 2) / (len(u) - 2))) if len(u) >= 3 else 0.0
        return cls(float(a), float(c), sd, int(len(u)))


@dataclass
class ModelCalibration:
    """One model's fits (training and test) and the points they came from."""

    model: str
    train: Fit
    test: Fit
    points: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Calibration:
    """Per-model fits, how they were measured (rows, dataset, input mean) and when."""

    models: dict[str, ModelCalibration]
    rows: int
    dataset: str = ""
    input_mean: float = DEFAULT_INPUT_MEAN
    cpu_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Calibration":
        try:
            models = {name: ModelCalibration(model=m["model"], train=Fit(**m["train"]), test=Fit(**m["test"]),
                                             points=list(m.get("points", [])))
                      for name, m in data["models"].items()}
            return cls(models=models, rows=int(data["rows"]), dataset=str(data.get("dataset", "")),
                       input_mean=float(data.get("input_mean", DEFAULT_INPUT_MEAN)),
                       cpu_seconds=float(data.get("cpu_seconds", 0.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"calibration: not a calibration record ({type(exc).__name__}: {exc})") from None

    def get(self, model: str) -> ModelCalibration:
        if model not in self.models:
            raise ConfigError(f"calibration: model {model!r} was not calibrated "
                              f"(calibrated: {', '.join(self.models) or 'none'})")
        return self.models[model]


def _spread_by_work(candidates, k):
    """``k`` candidates at evenly spaced ranks of their training work, up to CALIBRATION_TOP_QUANTILE."""
    if len(candidates) <= k:
        return list(candidates)
    order = sorted(candidates, key=lambda c: c[2].train.units)
    top = CALIBRATION_TOP_QUANTILE * (len(order) - 1)
    ranks = sorted({int(round(top * i / max(1, k - 1))) for i in range(k)})
    return [order[r] for r in ranks]


def calibrate(models: Sequence[str], X: np.ndarray, y: np.ndarray, *, input_shape, rows: int = 300,
              points: int = CALIBRATION_POINTS, seed: int = 0, options: Mapping[str, Mapping[str, Any]] | None = None,
              log: Callable[[str], None] | None = None) -> Calibration:
    """Time ``points`` points of each model on ``rows`` training and ``rows`` test rows; fit each model.

    ``X`` flat float32 rows in [0, 1] (at least ``2 * rows``), ``y`` labels;
    ``options``: ``{model: model options}``. The points are the model's
    published default (when valid) and random-sampler draws spread over the
    range of their training work (:data:`CALIBRATION_TOP_QUANTILE`). Points that
    turn out invalid in training or diverge are left out of the fit.
    """
    X, y = np.asarray(X), np.asarray(y)
    rows = int(rows)
    if rows < 2 or len(X) < 2 * rows:
        raise ConfigError(f"calibration needs at least 2 x {rows} rows, got {len(X)}")
    X_train, y_train, X_test = X[:rows], y[:rows], X[rows:2 * rows]
    classes = np.unique(y)
    input_mean = float(np.mean(X_train))
    options = dict(options or {})
    cpu0 = time.process_time()
    out: dict[str, ModelCalibration] = {}
    for model in models:
        spec = get_model(model)
        opts = dict(options.get(model) or {})
        kw = dict(input_shape=input_shape, n_classes=len(classes), options=opts, train_rows=rows,
                  test_rows=rows, input_mean=input_mean)
        chosen = []
        default = {k: spec.default_params[k] for k in spec.search_space(opts) if k in spec.default_params}
        if default:
            try:
                chosen.append(("default", default, point_work(model, default, **kw)))
            except InvalidConfigurationError:
                pass
        candidates, _ = valid_points(model, seed, max(4 * points, 12), **kw)
        chosen += _spread_by_work(candidates, max(0, points - len(chosen)))
        measured = []
        for draw, params, work in chosen:
            try:
                t = time_point(model, params, X_train, y_train, X_test, input_shape=input_shape,
                               classes=classes, options=opts, seed=seed)
            except InvalidConfigurationError:
                continue
            rec = {"draw": draw, "params": params, "train_units": work.train.units,
                   "test_units": work.test.units, **t}
            measured.append(rec)
            if log:
                log(f"[calibrate {model}] draw {draw}: {1e3 * t['train_s']:.3f} ms/train example, "
                    f"{1e3 * t['test_s']:.3f} ms/test example{' (diverged, not fitted)' if t['diverged'] else ''}")
        fitted = [m for m in measured if not m["diverged"]] or measured
        if not fitted:
            raise ConfigError(f"calibration of {model}: no valid point could be timed")
        out[model] = ModelCalibration(
            model=model,
            train=Fit.from_points([m["train_units"] for m in fitted], [m["train_s"] for m in fitted]),
            test=Fit.from_points([m["test_units"] for m in fitted], [m["test_s"] for m in fitted]),
            points=measured)
    return Calibration(models=out, rows=rows, input_mean=input_mean, cpu_seconds=time.process_time() - cpu0)


# --------------------------------------------------------------------------- scheduling


@dataclass
class Job:
    """One workflow job: ``threads`` it reserves, ``seconds`` of wall time, names it waits for."""

    name: str
    threads: int
    seconds: float
    cpu_seconds: float
    model: str
    after: tuple[str, ...] = ()


def schedule_wall(jobs: Sequence[Job], cores: int) -> float:
    """Wall seconds of running ``jobs`` on ``cores`` cores: list scheduling, longest ready job first,
    each job reserving ``min(threads, cores)`` cores once the jobs it waits for are done."""
    import heapq

    cores = max(1, int(cores))
    by_name = {j.name: j for j in jobs}
    waiting = {j.name: sum(1 for d in j.after if d in by_name) for j in jobs}
    children: dict[str, list[str]] = {}
    for j in jobs:
        for d in j.after:
            if d in by_name:
                children.setdefault(d, []).append(j.name)
    ready = [j for j in jobs if waiting[j.name] == 0]
    running: list[tuple[float, int, str]] = []
    t, free, done, counter = 0.0, cores, 0, 0
    while done < len(jobs):
        ready.sort(key=lambda j: -j.seconds)
        still = []
        for j in ready:
            need = min(max(1, j.threads), cores)
            if need <= free:
                free -= need
                counter += 1
                heapq.heappush(running, (t + j.seconds, counter, j.name))
            else:
                still.append(j)
        ready = still
        if not running:  # pragma: no cover - a dependency cycle
            raise RuntimeError("jobs wait for each other")
        t, _, name = heapq.heappop(running)
        finished = [name]
        while running and running[0][0] <= t:
            finished.append(heapq.heappop(running)[2])
        for name in finished:
            done += 1
            free += min(max(1, by_name[name].threads), cores)
            for child in children.get(name, ()):
                waiting[child] -= 1
                if waiting[child] == 0:
                    ready.append(by_name[child])
    return t


# --------------------------------------------------------------------------- prediction


@dataclass
class StudyPrediction:
    """Predicted CPU seconds (per model and total) and wall seconds on ``cores`` cores.

    Intervals are ``(p10, p50, p90)`` over the Monte-Carlo repetitions.
    ``wall_bound``: the lower bound ``max(core-seconds / cores, longest job)``
    (p50); ``longest_job``: its name and p50 seconds; ``expected_cpu``: the
    mean total CPU seconds over the draws (no calibration error);
    ``valid_fraction``: share of valid random draws per ``dataset/model``.
    """

    cores: int
    cpu: dict[str, tuple[float, float, float]]
    total_cpu: tuple[float, float, float]
    wall: tuple[float, float, float]
    wall_bound: float
    longest_job: tuple[str, float]
    expected_cpu: float
    n_jobs: int
    valid_fraction: dict[str, float]
    repetitions: int
    notes: list[str] = field(default_factory=list)
    samples: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _quantiles(x) -> tuple[float, float, float]:
    q = np.quantile(np.asarray(x, float), [0.1, 0.5, 0.9])
    return float(q[0]), float(q[1]), float(q[2])


@dataclass
class _Pool:
    """Valid points of one (model, dataset shape): per-example units and their random-sampler draws."""

    train_units: np.ndarray
    test_units: np.ndarray
    draws: np.ndarray          # draw index of each valid point
    n_draws: int
    default: tuple[float, float] | None


def _pool(model, seed, size, input_shape, n_classes, options, input_mean, need_random):
    """Valid points among the first ``size`` draws (and more, until ``need_random`` are valid)."""
    spec = get_model(model)
    tr, te, dr = [], [], []
    d = 0
    limit = max(size, 50 * need_random)
    kw = dict(input_shape=input_shape, n_classes=n_classes, options=options, input_mean=input_mean)
    while d < limit and (d < size or len(dr) < need_random):
        _, params = next(draw_points(model, seed, [d], options))
        try:
            w = point_work(model, params, **kw)
        except InvalidConfigurationError:
            d += 1
            continue
        tr.append(w.train.units)
        te.append(w.test.units)
        dr.append(d)
        d += 1
    default = None
    params = {k: spec.default_params[k] for k in spec.search_space(options) if k in spec.default_params}
    if params:
        try:
            w = point_work(model, params, **kw)
            default = (w.train.units, w.test.units)
        except InvalidConfigurationError:
            default = None
    return _Pool(np.array(tr), np.array(te), np.array(dr, int), d, default)


def predict_study(config: Mapping[str, Any], cores: int, calibration: Calibration, *, repetitions: int = 200,
                  pool_size: int = 400, seed: int = 0) -> StudyPrediction:
    """Predicted CPU and wall time of the workflow a validated ``config`` creates (see the module docstring).

    ``cores``: cores the workflow may use (Snakemake's ``--cores``);
    ``calibration``: from :func:`calibrate` (every configured model must be in it);
    ``pool_size``: random draws per (dataset, model) that ``gp``, ``tpe`` and
    the unknown best configurations are drawn from; ``repetitions``:
    Monte-Carlo repetitions; ``seed``: theirs (the draws themselves use the
    config's seed, as the study does).
    """
    from bioplaus.data import dataset_info
    from bioplaus.study.alignment import supports_alignment

    cores = int(cores)
    if cores < 1:
        raise ConfigError(f"cores must be at least 1, got {cores}")
    try:
        datasets = dict(config["datasets"])
        models, samplers = list(config["models"]), list(config["samplers"])
        n_trials, n_folds, epochs = int(config["n_trials"]), int(config["n_folds"]), int(config["epochs"])
        threads, repeats, workers = int(config["threads"]), int(config["repeats"]), int(config["workers"])
        study_seed = int(config["seed"])
        model_options = dict(config.get("model_options") or {})
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"predict_study needs a validated config (bioplaus.config.validate_config): "
                          f"missing or bad {exc}") from None
    cals = {m: calibration.get(m) for m in models}
    rng = np.random.default_rng(seed)
    notes = []

    info = {d: dataset_info(d) for d in datasets}
    n_rows = {d: info[d].prepared_samples((datasets[d] or {}).get("max_samples")) for d in datasets}
    need = n_trials if "random" in samplers else 0
    cache: dict[tuple, _Pool] = {}
    pools: dict[tuple[str, str], _Pool] = {}
    fold_s: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, float]] = {}
    for m in models:
        opts = dict(model_options.get(m) or {})
        for d in datasets:
            key = (m, info[d].shape, info[d].n_classes)
            if key not in cache:
                cache[key] = _pool(m, study_seed, pool_size, info[d].shape, info[d].n_classes, opts,
                                   calibration.input_mean, need)
            p = pools[d, m] = cache[key]
            # calibrated seconds per example of each valid point, and of the default
            tr, te = cals[m].train.seconds(p.train_units), cals[m].test.seconds(p.test_units)
            default = (fold_cpu_seconds(float(cals[m].train.seconds(p.default[0])),
                                        float(cals[m].test.seconds(p.default[1])), n_rows[d], n_folds, epochs)
                       if p.default else 0.0)
            fold_s[d, m] = (tr, te, default)
    valid_fraction = {f"{d}/{m}": (len(p.draws) / p.n_draws if p.n_draws else 0.0) for (d, m), p in pools.items()}
    for (d, m), p in pools.items():
        if len(p.draws) == 0:
            notes.append(f"{d}/{m}: no valid point in {p.n_draws} draws; its study would stop "
                         "(max_consecutive_invalid) and costs nothing here")
        elif "random" in samplers and len(p.draws) < n_trials:
            notes.append(f"{d}/{m}: only {len(p.draws)} valid of {p.n_draws} draws; the random study "
                         f"may stop before {n_trials} valid trials")
    if any(s != "random" for s in samplers):
        notes.append("gp and tpe trials (and each sampler's best, for the noise floor and transfer) are "
                     "drawn uniformly from the valid points")
    if any(c.train.n < 3 or c.test.n < 3 for c in cals.values()):
        notes.append("a model was calibrated on fewer than 3 points: its fit's spread is not in the interval")

    n_par = max(1, min(min(threads, cores), n_folds))   # fold processes of one evaluation
    rounds = math.ceil(n_folds / n_par)                 # wall of an evaluation, in fold times
    job_threads = min(threads, cores)
    transfer_repeats = max(1, repeats)                  # as workflow/rules/robustness.smk
    n_random = min(n_trials, min((len(p.draws) for p in pools.values()), default=0))

    def folds_of(d, m, idx, f_tr=1.0, f_te=1.0, sd_tr=0.0, sd_te=0.0):
        """CPU seconds of one fold of each point ``idx`` (with calibration errors)."""
        tr, te, _ = fold_s[d, m]
        k = len(idx)
        e_tr = f_tr * np.exp(rng.normal(size=k) * sd_tr) if sd_tr else f_tr
        e_te = f_te * np.exp(rng.normal(size=k) * sd_te) if sd_te else f_te
        return fold_cpu_seconds(tr[idx] * e_tr, te[idx] * e_te, n_rows[d], n_folds, epochs)

    def study_names(d, m):
        return [f"study {d}/{m}/{s}" + (f" worker {w}" if workers > 1 else "")
                for s in samplers for w in range(workers)]

    # the expectation: exact random draws, the mean over the valid points for the rest, no calibration error
    expected = 0.0
    for (d, m), p in pools.items():
        if len(p.draws) == 0:
            continue
        mean = float(np.mean(folds_of(d, m, np.arange(len(p.draws)))))
        default = fold_s[d, m][2]
        for s in samplers:
            if s == "random":
                expected += n_folds * float(np.sum(folds_of(d, m, np.arange(min(n_trials, len(p.draws))))))
            else:
                expected += n_folds * n_trials * mean
        sources = default + len(samplers) * mean
        expected += n_folds * repeats * sources
        if supports_alignment(m):
            expected += sources
        if len(datasets) > 1:
            expected += n_folds * transfer_repeats * (len(datasets) - 1) * mean

    wall_samples, bound_samples, total_samples = [], [], []
    model_samples = {m: [] for m in models}
    longest: dict[str, list[float]] = {}
    n_jobs = 0
    for _ in range(max(1, int(repetitions))):
        errs = {m: (math.exp(rng.normal() * c.train.log_sd / math.sqrt(c.train.n)),
                    math.exp(rng.normal() * c.test.log_sd / math.sqrt(c.test.n)),
                    c.train.log_sd, c.test.log_sd) for m, c in cals.items()}
        jobs: list[Job] = []
        for (d, m), p in pools.items():
            if len(p.draws) == 0:
                continue
            err = errs[m]
            names = study_names(d, m)
            for s in samplers:
                if s == "random":  # its exact first valid draws
                    idx = np.arange(min(n_trials, len(p.draws)))
                else:  # uniform over the valid points
                    idx = rng.integers(0, len(p.draws), size=n_trials)
                per_fold = folds_of(d, m, idx, *err)
                parts = np.array_split(np.arange(len(idx)), workers)
                for w, part in enumerate(parts):
                    name = f"study {d}/{m}/{s}" + (f" worker {w}" if workers > 1 else "")
                    jobs.append(Job(name, job_threads, float(per_fold[part].sum() * rounds),
                                    float(per_fold[part].sum() * n_folds), m))
            # the noise floor's sources: the default and each sampler's best (drawn from the valid points)
            default = fold_s[d, m][2] * err[0]
            sources = np.concatenate([[default], folds_of(d, m, rng.integers(0, len(p.draws), len(samplers)),
                                                          *err)])
            if repeats > 0:
                per_fold = np.repeat(sources, repeats)
                jobs.append(Job(f"repeats {d}/{m}", job_threads, float(per_fold.sum() * rounds),
                                float(per_fold.sum() * n_folds), m, tuple(names)))
            if supports_alignment(m):  # the first fold of each source, in one process
                jobs.append(Job(f"alignment {d}/{m}", 1, float(sources.sum()), float(sources.sum()),
                                m, tuple(names)))
            if len(datasets) > 1:  # each other dataset's best, refitted
                idx = rng.integers(0, len(p.draws), (len(datasets) - 1) * transfer_repeats)
                per_fold = folds_of(d, m, idx, *err)
                after = tuple(n for d2 in datasets if d2 != d for n in study_names(d2, m))
                jobs.append(Job(f"transfer {d}/{m}", job_threads, float(per_fold.sum() * rounds),
                                float(per_fold.sum() * n_folds), m, after))
        n_jobs = len(jobs)
        cpu = {m: sum(j.cpu_seconds for j in jobs if j.model == m) for m in models}
        total_samples.append(sum(cpu.values()))
        for m in models:
            model_samples[m].append(cpu[m])
        wall_samples.append(schedule_wall(jobs, cores) if jobs else 0.0)
        top = max(jobs, key=lambda j: j.seconds) if jobs else None
        reserved = sum(min(j.threads, cores) * j.seconds for j in jobs)
        bound_samples.append(max(reserved / cores, top.seconds if top else 0.0))
        if top is not None:
            longest.setdefault(top.name, []).append(top.seconds)
    name = max(longest, key=lambda k: len(longest[k])) if longest else ""
    if "random" in samplers and n_random < n_trials:
        notes.append(f"random studies were predicted with {n_random} valid trials where fewer than "
                     f"{n_trials} were found")
    return StudyPrediction(
        cores=cores,
        cpu={m: _quantiles(v) for m, v in model_samples.items()},
        total_cpu=_quantiles(total_samples),
        wall=_quantiles(wall_samples),
        wall_bound=float(np.median(bound_samples)),
        longest_job=(name, float(np.median(longest[name])) if name else 0.0),
        expected_cpu=float(expected),
        n_jobs=n_jobs,
        valid_fraction=valid_fraction,
        repetitions=len(total_samples),
        notes=notes,
        samples={"total_cpu": total_samples, "wall": wall_samples},
    )
