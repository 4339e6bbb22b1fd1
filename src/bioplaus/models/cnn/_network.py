"""The CNN's parameters, its forward/backward pass and the Adam optimiser.

Architecture (the reference study's): ``len(channels)`` blocks of
convolution (no bias) -> batch norm -> ReLU -> 2x2 max pool (floor), then one
linear layer on the flattened last feature map, softmax cross-entropy.
Feature maps are channels-last ``(n, h, w, c)``; see :mod:`._layers`.
"""

from __future__ import annotations

import numpy as np

from bioplaus.models import _finite
from bioplaus.models.cnn import _layers as L

BN_EPS = 1e-5


def feature_map_shapes(input_shape, channels, kernel_sizes, stride, padding):
    """Per block ``(conv_h, conv_w, pooled_h, pooled_w, channels)``; sizes may
    be < 1 when the geometry does not fit (the caller checks)."""
    _, h, w = input_shape
    shapes = []
    for f, k in zip(channels, kernel_sizes):
        ch = L.conv_output_size(h, k, stride, padding)
        cw = L.conv_output_size(w, k, stride, padding)
        h, w = L.pool_output_size(max(ch, 0)), L.pool_output_size(max(cw, 0))
        shapes.append((ch, cw, h, w, f))
    return shapes


def training_step_nbytes(input_shape, channels, kernel_sizes, stride, padding, batch, n_classes,
                         max_patch_bytes=None, itemsize=4):
    """Bytes of the arrays one training step (:meth:`ConvNet.forward_train` and
    :meth:`ConvNet.backward` of ``batch`` images, one shard) holds at its peak,
    from the buffers the passes allocate (:mod:`._layers`).

    Per block, the forward pass keeps for the backward pass the normalised
    convolution output ``xhat`` (the output itself, centred and scaled in
    place), the pooling's window codes (one byte per pooled value) and the
    im2col patches when they are built in one chunk (else the block's input;
    :func:`~._layers.conv_patch_rows`). A block's forward pass also holds its
    patches (or one chunk of them; the padding is not copied); its pooling
    writes the pooled map in one pass. The backward pass releases each
    block's buffers once its gradients are formed; in a block it holds the
    gradient of the block's output, the gradient of the
    convolution output (written over xhat, no longer needed) and either a
    chunk of patches or the input gradient with a chunk of patch gradients
    (:func:`~._layers.col2im_chunk_size`), besides weight-sized sums.
    Parameters, gradients and Adam's two moments are added. Geometry as
    :func:`feature_map_shapes` (the caller checks it)."""
    c, h, w = (int(v) for v in input_shape)
    n, p = int(batch), int(padding)
    budget = L.PATCH_BUDGET_BYTES if max_patch_bytes is None else int(max_patch_bytes)
    blocks, n_params = [], 0
    for f, k in zip(channels, kernel_sizes):
        ho, wo = L.conv_output_size(h, k, stride, p), L.conv_output_size(w, k, stride, p)
        hp, wp = L.pool_output_size(ho), L.pool_output_size(wo)
        step = L.conv_patch_rows(n, h, w, c, k, stride, p, itemsize, budget)
        whole = step >= n * ho * wo
        b = dict(
            input=n * h * w * c * itemsize, conv=n * ho * wo * f * itemsize, quarter=n * hp * wp * f * itemsize,
            masks=n * hp * wp * f, patches=step * k * k * c * itemsize,
            dx=n * h * w * c * itemsize,
            dcols=L.col2im_chunk_size(n, ho, wo, c, k, itemsize) * ho * wo * k * k * c * itemsize,
            whole=whole, weight=k * k * c * f * itemsize)
        b["kept"] = b["masks"] + b["conv"] + (b["patches"] if whole else b["input"])
        blocks.append(b)
        n_params += k * k * c * f + 2 * f
        c, h, w = f, hp, wp
    n_params += h * w * c * n_classes + n_classes
    peak, held = 0, 0
    for i, b in enumerate(blocks):  # forward
        x_in = 0 if (i > 0 and not b["whole"]) else b["input"]  # a chunked block keeps its input: in "kept"
        conv_stage = held + x_in + b["patches"] + b["conv"]
        pool_stage = held + x_in + b["kept"] + b["quarter"]
        peak = max(peak, conv_stage, pool_stage)
        held += b["kept"]
    for i in range(len(blocks) - 1, -1, -1):  # backward
        b = blocks[i]
        dy = b["quarter"] if i == len(blocks) - 1 else blocks[i + 1]["dx"]
        conv_work = max(0 if b["whole"] else b["patches"], b["dx"] + b["dcols"] if i > 0 else 0)
        peak = max(peak, held + dy + conv_work + 2 * b["weight"])  # gradient, product
        held -= b["kept"]
    return int(peak + 4 * n_params * itemsize + blocks[0]["input"])


class ConvNet:
    """Parameters and passes of one CNN.

    input_shape: ``(c, h, w)`` of one image; channels, kernel_sizes: one entry
    per block; stride, padding: shared by all convolutions (pixels);
    n_classes: outputs of the linear layer; rng: ``numpy.random.Generator``
    or ``RandomState`` for the initial weights; dtype: float32 (training) or
    float64 (gradient checks); max_patch_bytes: bound of each convolution's
    im2col buffer per shard (None: ``_cnn_layers.PATCH_BUDGET_BYTES``), an
    attribute that may be changed between passes.
    """

    def __init__(self, input_shape, channels, kernel_sizes, stride, padding, n_classes,
                 rng, dtype=np.float32, bn_momentum=0.1, max_patch_bytes=None):
        self.max_patch_bytes = max_patch_bytes
        self.input_shape = tuple(int(v) for v in input_shape)
        self.stride = int(stride)
        self.padding = int(padding)
        self.bn_momentum = float(bn_momentum)
        self.dtype = np.dtype(dtype)
        c_in = self.input_shape[0]
        self.conv_weights, self.bn_gammas, self.bn_betas = [], [], []
        self.running_means, self.running_vars = [], []
        shapes = feature_map_shapes(self.input_shape, channels, kernel_sizes, stride, padding)
        for (_, _, _, _, f), k in zip(shapes, kernel_sizes):
            fan_in = k * k * c_in
            # He (Kaiming) normal initialisation for a ReLU network
            w = rng.standard_normal((k, k, c_in, f)) * np.sqrt(2.0 / fan_in)
            self.conv_weights.append(w.astype(dtype))
            self.bn_gammas.append(np.ones(f, dtype=dtype))
            self.bn_betas.append(np.zeros(f, dtype=dtype))
            self.running_means.append(np.zeros(f, dtype=dtype))
            self.running_vars.append(np.ones(f, dtype=dtype))
            c_in = f
        _, _, h, w, f = shapes[-1]
        n_features = h * w * f
        bound = 1.0 / np.sqrt(n_features)
        self.linear_weight = rng.uniform(-bound, bound, (n_features, n_classes)).astype(dtype)
        self.linear_bias = np.zeros(n_classes, dtype=dtype)

    # -- parameters -----------------------------------------------------------

    def parameters(self):
        """Trainable arrays in a fixed order (the order of :meth:`backward`'s grads)."""
        params = []
        for w, g, b in zip(self.conv_weights, self.bn_gammas, self.bn_betas):
            params += [w, g, b]
        return params + [self.linear_weight, self.linear_bias]

    def all_finite(self):
        """True when no parameter or running statistic holds NaN/inf."""
        return _finite.every_entry_finite(self.parameters() + self.running_means + self.running_vars)

    # -- passes -----------------------------------------------------------------
    #
    # A batch is processed as a list of *shards* (consecutive slices of its
    # images) so that a thread pool can work on them in parallel; batch norm
    # combines per-shard sums into whole-batch statistics, so the result does
    # not depend on the number of shards. ``run(fn, items)`` maps ``fn`` over
    # the shards (``map`` for one thread, an executor's ``map`` for several).

    def forward_train(self, x_shards, run=map, update_running=True, workspace=None):
        """Logits ``(n, classes)`` with batch statistics.

        x_shards: list of NHWC image arrays ``(n_i, h, w, c)`` (one per shard).
        Returns ``(logits, cache)``. Updates the running mean/variance
        (momentum ``bn_momentum``, unbiased variance) unless ``update_running``
        is false. workspace: optional dict shared by the steps of one training
        pass, in which :meth:`backward` leaves the first block's convolution
        output and kept patches for the next step's forward pass to write
        into (they are alive for the whole step anyway, so the peak does not
        grow; fresh arrays of that size cost page faults, 10-15% of a step).
        """
        caches = []
        mom = self.bn_momentum
        spare = workspace.pop("first_block", None) if workspace is not None else None
        if spare is None or len(spare) != len(x_shards):
            spare = [(None, None)] * len(x_shards)
        for i, weight in enumerate(self.conv_weights):
            def conv(args, weight=weight):
                x, (out, cols) = args
                z, conv_cache = L.conv_forward(x, weight, self.stride, self.padding,
                                               self.max_patch_bytes, out=out, cols=cols)
                z2 = z.reshape(-1, z.shape[-1])
                return z, z2, conv_cache, L.column_sums(z2)

            convs = list(run(conv, list(zip(x_shards, spare))))
            spare = [(None, None)] * len(x_shards)
            count = sum(c[1].shape[0] for c in convs)
            mean = sum(c[3] for c in convs) / count

            # centred in place: the convolution output becomes the normalised xhat
            centred = list(run(lambda c: L.batchnorm_centre(c[1], mean, out=c[1]), convs))
            var = sum(c[1] for c in centred) / count
            gamma, beta = self.bn_gammas[i], self.bn_betas[i]

            def normalise_pool(args):
                (z, _, _, _), (cen, _) = args
                return L.batchnorm_normalise_relu_pool(cen, var, gamma, beta, BN_EPS, z.shape)

            outs = list(run(normalise_pool, list(zip(convs, centred))))
            if update_running:
                unbiased = var * (count / max(count - 1, 1))
                self.running_means[i] *= 1 - mom
                self.running_means[i] += (mom * mean).astype(self.dtype)
                self.running_vars[i] *= 1 - mom
                self.running_vars[i] += (mom * unbiased).astype(self.dtype)
            caches.append(([c[2] for c in convs], [o[1] for o in outs], [o[2] for o in outs], count))
            x_shards = [o[0] for o in outs]
            del convs, centred, outs
        flats = [x.reshape(x.shape[0], -1) for x in x_shards]
        logits = L.linear_forward(np.concatenate(flats) if len(flats) > 1 else flats[0],
                                  self.linear_weight, self.linear_bias)
        return logits, (caches, flats, [x.shape for x in x_shards])

    def backward(self, dlogits, cache, run=map, workspace=None):
        """Gradients of the loss w.r.t. :meth:`parameters`, given dlogits
        ``(n, classes)`` and the cache of :meth:`forward_train`.

        The cache is consumed: each block's buffers are released once its
        gradients are formed (the last block's first), so that the first,
        largest block's backward pass does not hold the others' too."""
        caches, flats, last_shapes = cache
        flat = np.concatenate(flats) if len(flats) > 1 else flats[0]
        dflat, dlin_w, dlin_b = L.linear_backward(dlogits, flat, self.linear_weight)
        bounds = np.cumsum([0] + [s[0] for s in last_shapes])
        dx_shards = [dflat[a:b].reshape(shape)
                     for a, b, shape in zip(bounds[:-1], bounds[1:], last_shapes)]
        grads = [dlin_w, dlin_b]
        for i in range(len(self.conv_weights) - 1, -1, -1):
            conv_caches, bn_caches, pool_caches, count = caches[i]

            def pool_back(args):
                dx, bn_cache, pool_cache, _ = args
                return L.relu_pool_batchnorm_backward_sums(dx, pool_cache, bn_cache)

            shards = list(zip(dx_shards, bn_caches, pool_caches, conv_caches))
            sums = list(run(pool_back, shards))
            dgamma = sum(s[0] for s in sums)
            dbeta = sum(s[1] for s in sums)
            need_dx = i > 0

            def conv_back(args):
                dx, bn_cache, pool_cache, conv_cache = args
                dz = L.relu_pool_batchnorm_backward_dx(dx, pool_cache, bn_cache, dgamma, dbeta, count)
                return L.conv_backward(dz, conv_cache, need_dx=need_dx)

            backs = list(run(conv_back, shards))
            if i == 0 and workspace is not None:  # buffers for the next step (see forward_train)
                workspace["first_block"] = [(b[0], c[0]) for b, c in zip(bn_caches, conv_caches)]
            caches[i] = None  # this block's buffers are no longer needed
            del shards, conv_caches, bn_caches, pool_caches
            dweight = sum(b[1] for b in backs)
            dx_shards = [b[0] for b in backs]
            del backs
            grads = [dweight, dgamma, dbeta] + grads
        return grads

    def forward_eval(self, x_shards, run=map):
        """Logits ``(n, classes)`` of NHWC image shards with the running statistics."""
        def one(x):
            for i, weight in enumerate(self.conv_weights):
                z, _ = L.conv_forward(x, weight, self.stride, self.padding,
                                      self.max_patch_bytes)
                x = L.batchnorm_eval_relu_pool(z, self.bn_gammas[i], self.bn_betas[i],
                                               self.running_means[i], self.running_vars[i],
                                               BN_EPS)
            return L.linear_forward(x.reshape(x.shape[0], -1), self.linear_weight,
                                    self.linear_bias)

        outs = list(run(one, x_shards))
        return np.concatenate(outs) if len(outs) > 1 else outs[0]


class Adam:
    """Adam (Kingma & Ba 2015) with bias correction, as PyTorch's default
    (no weight decay). State arrays match the parameters' shapes and dtype."""

    def __init__(self, params, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.first = [np.zeros_like(p) for p in params]
        self.second = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, params, grads, learning_rate):
        """Update ``params`` in place from ``grads`` (same order)."""
        self.t += 1
        b1, b2 = self.beta_1, self.beta_2
        step_size = learning_rate / (1.0 - b1**self.t)
        root_correction = np.sqrt(1.0 - b2**self.t)
        for p, g, m, v in zip(params, grads, self.first, self.second):
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * (g * g)
            denom = np.sqrt(v)
            denom /= root_correction
            denom += self.epsilon
            p -= (step_size * m / denom).astype(p.dtype, copy=False)
