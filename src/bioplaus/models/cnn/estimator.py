"""The backprop CNN of the reference study, in NumPy, as a scikit-learn classifier.

Architecture: ``n_blocks`` blocks of convolution -> batch normalisation ->
ReLU -> 2x2 max pooling (stride 2), then one linear layer on the flattened
last feature map; softmax cross-entropy, Adam. Stride and padding are shared
by all convolutions (as in the reference); channels and kernel size are per
block. Convolutions have no bias (the batch norm's shift replaces it).

Geometry. A convolution of an ``h x w`` map gives
``((h + 2p - k) // s + 1) x ((w + 2p - k) // s + 1)``; max pooling floors
(an odd last row/column is dropped, PyTorch's ``ceil_mode=False``), so a
block needs a convolution output of at least 2x2. A configuration whose
feature map shrinks below 1x1 is *invalid*: :class:`CNNClassifier` raises
:class:`~bioplaus.errors.InvalidConfigurationError` at ``fit``/``partial_fit``
and :func:`check_params` checks a search-space point without building
anything.

Inputs are images ``(n, channels, height, width)`` (``(n, height, width)`` is
one channel) or flat rows ``(n, channels*height*width)`` reshaped by the
declared ``input_shape`` (flat rows without ``input_shape`` are read as
``1 x 1 x n_features`` images).
"""

from __future__ import annotations

import numbers
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from bioplaus.errors import ConfigError, InvalidConfigurationError
from bioplaus.models.cnn._layers import softmax, softmax_cross_entropy
from bioplaus.models.cnn._network import Adam, ConvNet, feature_map_shapes
from bioplaus.models._inputs import finite_sum, label_indices, plain_label_indices
from bioplaus.models._threads import one_blas_thread

MAX_BLOCKS = 5

__all__ = ["CNNClassifier", "check_params", "check_geometry", "params_to_estimator_args", "MAX_BLOCKS"]


# ---------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------


def check_geometry(input_shape, channels, kernel_sizes, stride, padding):
    """Feature-map shapes of each block, or :class:`InvalidConfigurationError`.

    input_shape: ``(c, h, w)``; channels, kernel_sizes: one int per block;
    stride, padding: pixels, shared. Returns a list of ``(h, w, channels)``
    after each block's pooling. The error message names the block, its kernel,
    the stride, the padding and the resulting size.
    """
    _, h, w = input_shape
    shapes = feature_map_shapes(input_shape, channels, kernel_sizes, stride, padding)
    out = []
    for block, ((ch, cw, ph, pw, f), k) in enumerate(zip(shapes, kernel_sizes), start=1):
        where = (f"CNN block {block} (kernel_size={k}, stride={stride}, padding={padding}) "
                 f"on a {h}x{w} feature map")
        if ch < 1 or cw < 1:
            raise InvalidConfigurationError(
                f"{where}: the kernel does not fit, convolution output would be "
                f"{max(ch, 0)}x{max(cw, 0)} (input shape {tuple(input_shape)})")
        if ph < 1 or pw < 1:
            raise InvalidConfigurationError(
                f"{where}: convolution output {ch}x{cw} is pooled (2x2, floor) to "
                f"{ph}x{pw}, smaller than 1x1 (input shape {tuple(input_shape)})")
        out.append((ph, pw, f))
        h, w = ph, pw
    return out


def params_to_estimator_args(params):
    """CNNClassifier arguments from a search-space point (keys ``batch_size``,
    ``learning_rate``, ``num_layers``, ``ch_1``..``ch_5``, ``k_1``..``k_5``,
    ``stride``, ``padding``; integer values may be floats, as in the
    reference logs, and are rounded)."""
    try:
        n_blocks = int(round(float(params["num_layers"])))
        if not 1 <= n_blocks <= MAX_BLOCKS:
            raise InvalidConfigurationError(
                f"num_layers={params['num_layers']} is outside 1..{MAX_BLOCKS}")
        return dict(
            batch_size=int(round(float(params["batch_size"]))),
            learning_rate=float(params["learning_rate"]),
            n_blocks=n_blocks,
            channels=tuple(int(round(float(params[f"ch_{i}"]))) for i in range(1, n_blocks + 1)),
            kernel_sizes=tuple(int(round(float(params[f"k_{i}"]))) for i in range(1, n_blocks + 1)),
            stride=int(round(float(params["stride"]))),
            padding=int(round(float(params["padding"]))),
        )
    except KeyError as exc:
        raise ConfigError(f"CNN parameters lack {exc.args[0]!r}") from None


def check_params(params, input_shape):
    """Check a search-space point against an image shape ``(c, h, w)`` without
    building a model; returns the per-block ``(h, w, channels)`` after pooling,
    raises :class:`InvalidConfigurationError` when the geometry does not fit."""
    args = params_to_estimator_args(params)
    return check_geometry(tuple(input_shape), args["channels"], args["kernel_sizes"],
                          args["stride"], args["padding"])


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

@contextmanager
def _workers(n_jobs):
    """``(run, split)`` for ``n_jobs`` threads: ``run(fn, items)`` maps over
    shards (serially for one thread), ``split(x)`` cuts a batch into consecutive
    shards. BLAS is limited to one thread meanwhile."""
    if n_jobs is None:
        n_threads = 1
    elif n_jobs == -1:
        n_threads = os.cpu_count() or 1
    else:
        n_threads = int(n_jobs)

    def split(x):
        parts = min(n_threads, x.shape[0])
        if parts <= 1:
            return [x]
        bounds = np.linspace(0, x.shape[0], parts + 1).astype(int)
        return [x[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    with one_blas_thread():
        if n_threads <= 1:
            yield map, split
        else:
            with ThreadPoolExecutor(max_workers=n_threads) as pool:
                yield pool.map, split


def _per_block(value, n_blocks, name):
    """``value`` as a tuple of ``n_blocks`` positive ints (an int is repeated)."""
    if isinstance(value, numbers.Integral):
        values = (int(value),) * n_blocks
    else:
        try:
            values = tuple(value)
        except TypeError:
            raise InvalidConfigurationError(f"{name} must be an int or a sequence of ints, "
                                            f"got {value!r}") from None
        if len(values) < n_blocks:
            raise InvalidConfigurationError(
                f"{name}={value!r} has {len(values)} entries but n_blocks={n_blocks}")
        values = values[:n_blocks]
    for v in values:
        if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
            raise InvalidConfigurationError(f"{name} entries must be positive ints, got {value!r}")
    return tuple(int(v) for v in values)


_IGNORE_FP = dict(over="ignore", invalid="ignore", divide="ignore", under="ignore")


# ---------------------------------------------------------------------------
# estimator
# ---------------------------------------------------------------------------


class CNNClassifier(ClassifierMixin, BaseEstimator):
    """Convolutional network (conv -> batch norm -> ReLU -> 2x2 max pool blocks,
    then a linear layer) trained by backprop with Adam on cross-entropy.

    Parameters
    ----------
    n_blocks : int, number of conv blocks (the first ``n_blocks`` entries of
        ``channels`` and ``kernel_sizes`` are used).
    channels : int or sequence of int, output channels per block.
    kernel_sizes : int or sequence of int, square kernel size per block (pixels).
    stride, padding : int, convolution stride (>= 1) and zero padding (>= 0),
        shared by all blocks.
    batch_size : int, images per Adam step.
    learning_rate : float, Adam step size.
    epochs : int, passes over the data made by :meth:`fit`.
    input_shape : (channels, height, width) or None, image shape of flat rows.
    bn_momentum : float, weight of the newest batch in the running batch-norm
        statistics used at prediction.
    shuffle : bool, reshuffle the rows every epoch in :meth:`fit`.
    random_state : int, RandomState or None; initial weights and shuffling.
    predict_batch_size : int or None, images per forward pass at prediction;
        None: as many as keep each layer's im2col matrix, and twice its output,
        within ``max_patch_mb``.
    max_patch_mb : float, bound (MiB) of the im2col patch buffer of one
        convolution (per thread): larger patch matrices are built, used and
        discarded chunk by chunk of images, in training (forward and backward)
        and prediction. A layer whose patches fit keeps them for its backward
        pass, so a training step holds at most ``n_blocks`` such buffers.
    n_jobs : int or None, threads that share each batch (None: 1; -1: all
        cores). BLAS is held to one thread per worker during fit/predict, since
        OpenBLAS's own threads slow down the CNN's tall, narrow products.

    Fitted attributes
    -----------------
    classes_, n_features_in_, input_shape_ (c, h, w), feature_shapes_ (per block
    (h, w, channels) after pooling), network_ (weights), n_iter_ (passes over
    data), t_ (Adam steps), loss_ (mean loss of the last pass; inf once
    diverged), loss_curve_, diverged_ (NaN/inf met: training stopped,
    predictions at chance), fit_seconds_.
    """

    def __init__(self, n_blocks=2, channels=(16, 32), kernel_sizes=(5, 5), stride=1, padding=2,
                 batch_size=100, learning_rate=1e-3, epochs=10, input_shape=None,
                 bn_momentum=0.1, shuffle=True, random_state=None, predict_batch_size=None,
                 n_jobs=None, max_patch_mb=64):
        self.n_blocks = n_blocks
        self.channels = channels
        self.kernel_sizes = kernel_sizes
        self.stride = stride
        self.padding = padding
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.input_shape = input_shape
        self.bn_momentum = bn_momentum
        self.shuffle = shuffle
        self.random_state = random_state
        self.predict_batch_size = predict_batch_size
        self.n_jobs = n_jobs
        self.max_patch_mb = max_patch_mb

    # -- validation -----------------------------------------------------------

    def _check_hyperparameters(self):
        """Validated ``(channels, kernel_sizes)`` tuples; raises
        InvalidConfigurationError naming the offending parameter."""
        def int_at_least(name, minimum=1):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
                raise InvalidConfigurationError(f"{name} must be an int >= {minimum}, got {value!r}")
            return int(value)

        n_blocks = int_at_least("n_blocks")
        int_at_least("stride")
        int_at_least("padding", minimum=0)
        int_at_least("batch_size")
        int_at_least("epochs", minimum=0)
        if self.predict_batch_size is not None:
            int_at_least("predict_batch_size")
        lr = self.learning_rate
        if not isinstance(lr, numbers.Real) or not np.isfinite(lr) or lr <= 0:
            raise InvalidConfigurationError(f"learning_rate must be a positive float, got {lr!r}")
        patch_mb = self.max_patch_mb
        if (not isinstance(patch_mb, numbers.Real) or isinstance(patch_mb, bool)
                or not np.isfinite(patch_mb) or patch_mb <= 0):
            raise InvalidConfigurationError(f"max_patch_mb must be a positive number of MiB, "
                                            f"got {patch_mb!r}")
        mom = self.bn_momentum
        if not isinstance(mom, numbers.Real) or not 0 <= mom <= 1:
            raise InvalidConfigurationError(f"bn_momentum must be in [0, 1], got {mom!r}")
        n_jobs = self.n_jobs
        if n_jobs is not None and (not isinstance(n_jobs, numbers.Integral) or n_jobs == 0
                                   or n_jobs < -1):
            raise InvalidConfigurationError(f"n_jobs must be None, -1 or a positive int, "
                                            f"got {n_jobs!r}")
        channels = _per_block(self.channels, n_blocks, "channels")
        kernels = _per_block(self.kernel_sizes, n_blocks, "kernel_sizes")
        return channels, kernels

    def _declared_shape(self):
        if self.input_shape is None:
            return None
        try:
            shape = tuple(int(v) for v in self.input_shape)
        except (TypeError, ValueError):
            shape = ()
        if len(shape) != 3 or min(shape) < 1:
            raise InvalidConfigurationError(
                f"input_shape must be (channels, height, width) of positive ints, "
                f"got {self.input_shape!r}")
        return shape

    def _validate_input(self, X, y=None, reset=True):
        """Validated float32 images ``(n, c, h, w)`` (a view when possible),
        their shape ``(c, h, w)``, and y."""
        declared = self._declared_shape()
        image_shape = None
        if hasattr(X, "shape") and len(X.shape) > 2:
            X = np.asarray(X)
            if X.ndim > 4:
                raise ValueError(f"expected images (n, c, h, w), got an array of shape {X.shape}")
            image_shape = (1, *X.shape[1:]) if X.ndim == 3 else tuple(X.shape[1:])
            X = X.reshape(X.shape[0], -1)
        kwargs = dict(reset=reset, dtype=np.float32, order="C")
        if y is None:
            X = validate_data(self, X, **kwargs)
        else:
            X, y = validate_data(self, X, y, **kwargs)
        n_features = X.shape[1]
        if image_shape is None:
            image_shape = (declared or (1, 1, n_features)) if reset else self.input_shape_
        if declared is not None and image_shape != declared:
            raise ValueError(f"images of shape {image_shape} do not match input_shape={declared}")
        if int(np.prod(image_shape)) != n_features:
            raise ValueError(f"X has {n_features} features per row, which cannot be reshaped "
                             f"to input_shape={image_shape}")
        if not reset and image_shape != self.input_shape_:
            raise ValueError(f"X holds images of shape {image_shape}, but {type(self).__name__} "
                             f"was fitted on {self.input_shape_}")
        return X.reshape(X.shape[0], *image_shape), image_shape, y

    def _plain_images(self, X):
        """A later call's ``X`` as images ``(n, c, h, w)`` (a view) when :meth:`_validate_input` would
        return the same numbers without converting anything: exactly a float32 ``np.ndarray`` of at
        least one row, of the fitted image shape (flat rows, ``(n, h, w)`` for one channel, or
        ``(n, c, h, w)``), every value finite, the estimator fitted without feature names and its
        ``input_shape`` unchanged. Else None: scikit-learn's checks then raise or convert as always.
        Those checks cost some 0.3 ms a call, most of a ``partial_fit`` on one image."""
        shape = getattr(self, "input_shape_", None)
        if (shape is None or type(X) is not np.ndarray or X.dtype != np.float32 or X.ndim < 2
                or X.shape[0] == 0 or hasattr(self, "feature_names_in_")):
            return None
        if X.ndim == 2:
            ok = X.shape[1] == getattr(self, "n_features_in_", None) == shape[0] * shape[1] * shape[2]
        elif X.ndim == 3:
            ok = shape == (1, *X.shape[1:])
        else:
            ok = X.ndim == 4 and X.shape[1:] == shape
        if not ok or (self.input_shape is not None and self._declared_shape() != shape) or not finite_sum(X):
            return None
        return X.reshape(X.shape[0], *shape)

    # -- training -------------------------------------------------------------

    def _initialise(self, image_shape, classes, channels, kernels, rng):
        self.feature_shapes_ = check_geometry(image_shape, channels, kernels,
                                              int(self.stride), int(self.padding))
        self.input_shape_ = tuple(image_shape)
        self.classes_ = classes
        self.network_ = ConvNet(image_shape, channels, kernels, int(self.stride), int(self.padding),
                                len(classes), rng, dtype=np.float32,
                                bn_momentum=float(self.bn_momentum),
                                max_patch_bytes=self._patch_bytes())
        self._optimizer = Adam(self.network_.parameters())
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_ = np.nan
        self.loss_curve_ = []
        self.diverged_ = False
        self.fit_seconds_ = 0.0

    def _patch_bytes(self):
        """``max_patch_mb`` in bytes (at least one byte)."""
        return max(int(float(self.max_patch_mb) * 2**20), 1)

    def _train_pass(self, images, y_index, order=None):
        """One pass over ``images`` (n, c, h, w) in mini-batches, in the given
        row order (default: as stored). Stops at the first NaN/inf loss."""
        if self.diverged_:
            return
        start_time = time.perf_counter()
        net, opt = self.network_, self._optimizer
        net.max_patch_bytes = self._patch_bytes()
        n = images.shape[0]
        bs = int(self.batch_size)
        lr = float(self.learning_rate)
        total, count = 0.0, 0
        workspace = {}  # buffers passed from one batch to the next (ConvNet.forward_train)
        with np.errstate(**_IGNORE_FP), _workers(self.n_jobs) as (run, split):
            for start in range(0, n, bs):
                rows = slice(start, start + bs) if order is None else order[start:start + bs]
                xb = np.ascontiguousarray(images[rows].transpose(0, 2, 3, 1))  # NHWC (a view for 1 channel)
                yb = y_index[rows]
                logits, cache = net.forward_train(split(xb), run, workspace=workspace)
                loss, dlogits = softmax_cross_entropy(logits, yb)
                if not np.isfinite(loss):
                    self.diverged_ = True
                    break
                opt.step(net.parameters(), net.backward(dlogits, cache, run, workspace), lr)
                total += loss * len(yb)
                count += len(yb)
            if not self.diverged_ and not net.all_finite():
                self.diverged_ = True
        self.t_ = opt.t
        self.n_iter_ += 1
        if self.diverged_:
            self.loss_ = np.inf
        else:
            self.loss_ = total / count if count else np.nan
        self.loss_curve_.append(self.loss_)
        self.fit_seconds_ += time.perf_counter() - start_time

    def fit(self, X, y):
        """Train from scratch for ``epochs`` passes (rows reshuffled each epoch
        from ``random_state`` when ``shuffle``). X: images or flat rows; y: (n,)."""
        channels, kernels = self._check_hyperparameters()
        images, image_shape, y = self._validate_input(X, y, reset=True)
        check_classification_targets(y)
        rng = check_random_state(self.random_state)
        self._initialise(image_shape, np.unique(y), channels, kernels, rng)
        y_index = label_indices(self.classes_, y)
        for _ in range(int(self.epochs)):
            order = rng.permutation(len(y_index)) if self.shuffle else None
            self._train_pass(images, y_index, order)
            if self.diverged_:
                break
        return self

    def partial_fit(self, X, y, classes=None):
        """One pass over the given rows, in the given order, in mini-batches of
        ``batch_size`` (no shuffling). ``classes`` (all labels) is required on
        the first call."""
        first = not hasattr(self, "classes_")
        if not first:  # a later call on plain arrays: the cheap checks (same numbers, same errors)
            images = self._plain_images(X)
            y_index = None if images is None else plain_label_indices(self.classes_, y, images.shape[0])
            if y_index is not None:
                self._check_classes(classes)
                self._train_pass(images, y_index)
                return self
        if first:
            channels, kernels = self._check_hyperparameters()
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit")
        images, image_shape, y = self._validate_input(X, y, reset=first)
        check_classification_targets(y)
        if first:
            self._initialise(image_shape, np.unique(np.asarray(classes)), channels, kernels,
                             check_random_state(self.random_state))
        else:
            self._check_classes(classes)
        self._train_pass(images, label_indices(self.classes_, y))
        return self

    def _check_classes(self, classes):
        """A later call's ``classes`` (None, or the first call's labels) against ``classes_``."""
        if classes is not None and not np.array_equal(np.unique(np.asarray(classes)), self.classes_):
            raise ValueError(f"classes={classes!r} differ from the first call's "
                             f"{self.classes_.tolist()}")

    # -- prediction -----------------------------------------------------------

    def predict_proba(self, X):
        """Class probabilities ``(n, n_classes)``, columns in ``classes_`` order;
        uniform (chance) rows when the fit diverged or the output is not finite."""
        if not hasattr(self, "network_"):
            check_is_fitted(self)
        images = self._plain_images(X)
        if images is None:
            images, _, _ = self._validate_input(X, reset=False)
        n, k = images.shape[0], len(self.classes_)
        proba = np.full((n, k), 1.0 / k, dtype=np.float64)
        if self.diverged_ or n == 0:
            return proba
        step = self._predict_chunk()
        self.network_.max_patch_bytes = self._patch_bytes()
        with np.errstate(**_IGNORE_FP), _workers(self.n_jobs) as (run, split):
            for start in range(0, n, step):
                xb = np.ascontiguousarray(images[start:start + step].transpose(0, 2, 3, 1))
                p = softmax(self.network_.forward_eval(split(xb), run))
                ok = np.isfinite(p).all(axis=1)
                proba[start:start + step][ok] = p[ok]
        return proba

    def _predict_chunk(self):
        """Images per forward pass at prediction (see ``predict_batch_size``)."""
        if self.predict_batch_size is not None:
            return int(self.predict_batch_size)
        net = self.network_
        c, h, w = self.input_shape_
        largest = 1  # entries per image of the largest im2col matrix, or twice the largest output
        for weight, (ph, pw, f) in zip(net.conv_weights, self.feature_shapes_):
            k = weight.shape[0]
            ho = (h + 2 * net.padding - k) // net.stride + 1
            wo = (w + 2 * net.padding - k) // net.stride + 1
            # a layer's output and its pooling's halves: with few input channels and a small
            # kernel (k*k*c of 4 against 64 output channels) they are many times the patches
            largest = max(largest, ho * wo * k * k * c, 2 * ho * wo * f)
            c, h, w = f, ph, pw
        return int(np.clip(self._patch_bytes() // (4 * largest), 1, 4096))

    def predict(self, X):
        """Predicted labels ``(n,)`` (the most probable class)."""
        if not hasattr(self, "network_"):
            check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags
