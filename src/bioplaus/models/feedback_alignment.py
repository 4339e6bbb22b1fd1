"""Feedback alignment, direct feedback alignment and sign symmetry as estimators (``fa``, ``dfa``, ``sign``),
and their backprop control (``bp-sgd``).

The three rules share everything but the path the output error takes back to
the hidden layers, so they share :class:`FeedbackAlignmentBase` (forward pass,
loss, optimizer, alignment record) and differ in one hook,
``_feedback(layer, delta_above, e)``. ``bp-sgd`` is the same network and
optimizer with the backprop path (``W_{l+1}^T``): the control that tells a
rule's credit assignment from its optimizer (plain SGD with momentum, where
the backprop baselines ``mlp`` and ``cnn`` use Adam, as the 2019 study did).
This module also holds their search spaces and registry entries.

Network and loss (all three rules; ``L`` layers, hidden layers ``l = 0 .. L-2``)
    ``a_l = h_l W_l + b_l``, ``h_{l+1} = f(a_l)`` with ``h_0 = x``;
    ``p = softmax(a_{L-1})``; loss ``J = -(1/B) sum_n sum_k t_nk log p_nk``
    (softmax cross-entropy, mean over the mini-batch of ``B`` rows). The
    papers' output choices differ (sigmoid outputs, cross-entropy or squared
    error); we use softmax cross-entropy for all three so that the rules differ
    from each other and from the backprop MLP (``mlp``, also softmax
    cross-entropy) only in their credit assignment. Output error
    ``e = dJ/da_{L-1} = (p - t) / B``.

Credit assignment (``delta_{L-1} = e``; update ``dW_l = h_l^T delta_l``, ``db_l = sum_n delta_l``)
    * backprop:  ``delta_l = (delta_{l+1} W_{l+1}^T) * f'(a_l)``
    * ``fa``  (Lillicrap, Cownden, Tweed & Akerman 2016, Nat. Commun. 7:13276,
      eq. for the hidden update ``delta h = B e``): ``delta_l = (delta_{l+1} B_l) * f'(a_l)``
      with ``B_l`` (shape ``(n_{l+2}, n_{l+1})``) fixed and random.
    * ``dfa`` (Nøkland 2016, NeurIPS, eq. for ``delta a_i = (B_i e) * f'(a_i)``):
      ``delta_l = (e B_l) * f'(a_l)``, ``B_l`` of shape ``(n_out, n_{l+1})``
      fixed and random: every hidden layer receives the output error directly.
    * ``sign`` (Liao, Leibo & Poggio 2016, AAAI, "sign-concordant feedback";
      Xiao, Chen, Liao & Poggio 2018, arXiv:1811.03567, "sign-symmetry"):
      ``delta_l = (delta_{l+1} B_l) * f'(a_l)`` with ``B_l = s_l sign(W_{l+1})^T``
      recomputed after every update. ``s_l`` is a fixed per-layer magnitude
      (``feedback_scale`` times the s.d. of ``W_{l+1}``'s initialisation):
      with unit magnitudes an error grows by about ``sqrt(n)`` per layer
      relative to backprop's, which Liao et al. absorb with batch
      normalisation and "Batch Manhattan" updates, neither of which this
      network family has.

Initialisation and optimizer
    Forward weights ``W_l ~ U(-r, r)``, ``r = weight_scale * sqrt(6 / (n_l + n_{l+1}))``
    (Glorot & Bengio 2010), biases 0. Random feedback (``fa``, ``dfa``)
    ``B ~ U(-r_B, r_B)`` with ``r_B = feedback_scale * sqrt(6 / (n_src + n_dst))``,
    i.e. at ``feedback_scale = 1`` distributed like the transpose of a fresh
    forward matrix of the same shape. Updates are SGD with momentum
    (``v <- mu v - eta g``, ``W <- W + v``): the feedback-alignment papers train
    with SGD, and SGD keeps the update of each layer a fixed multiple of the
    rule's own direction, so that the recorded alignment angle is the rule's,
    not an adaptive optimizer's per-weight rescaling.

Alignment
    With ``record_alignment=True`` each batch also computes the backprop
    gradient of the same loss ``J`` on the same batch and records, per hidden
    layer, the angle between ``h_l^T delta_l`` of the rule and of backprop
    (``alignment_``, see :class:`~bioplaus.models._rate_network.RateNetworkClassifier`).

Published MNIST accuracies (for orientation; the papers' networks are wider and trained longer)
    * ``fa``: Lillicrap et al. (2016, Fig. 2a) train a 784-1000-10 network of
      sigmoid hidden and output units on squared error with learning rate
      1e-3 and weight decay 1e-6 on the 60,000 training images, and report a
      test error of about 2.4 % for backprop and 2.1 % for feedback
      alignment. As reported in Lillicrap et al. (2016), Fig. 2a and Results;
      not verified against the paper's text here: the settings are as a
      reproduction paraphrases the paper's Methods (YAGI0423/feedback_alignment,
      README, citing arXiv:1411.0247), and the 2.1 % appears in a third-party
      summary (paperium.net); neither error rate was read in the paper itself.
    * ``dfa``: Nøkland (2016, abstract; verified in the NeurIPS proceedings'
      abstract): direct feedback alignment combined with dropout reaches
      1.45 % test error on permutation-invariant MNIST (a network larger
      than this family's, trained with dropout). The paper's MNIST table of
      fully connected networks without dropout (backprop, FA and DFA side by
      side) is not verified here and we quote no number from it. The author's code (anokland/dfa-torch,
      ``Main.lua``, ``Models/mlp.lua``) trains by default 784-800-800-10 tanh
      with sigmoid outputs on binary cross-entropy, RMSprop at 1e-4, batch 64,
      300 epochs, all forward weights and biases starting at zero and feedback
      ``U(-1/sqrt(n), 1/sqrt(n))`` for a hidden layer of ``n`` units.
    * ``sign``: Liao, Leibo & Poggio (2016) test sign-concordant feedback on
      MNIST among other data sets with convolutional networks, batch
      normalisation and "Batch Manhattan" updates, and Xiao et al. (2018) on
      ImageNet (ResNet-18, AlexNet; their code, willwx/sign-symmetry, also
      offers Batch Manhattan after Liao et al.); neither reports a fully
      connected network of this family and we quote no number (Liao et al.'s
      MNIST errors are not verified here).
    Our own numbers (Fashion-MNIST and the 5,000-image MNIST subset, full
    MNIST being out of reach) are in the study's results.

Search spaces (ranges are ours, spanning the papers' settings)
    ``learning_rate`` log-uniform [1e-3, 0.5] (SGD on a batch-mean loss;
    the papers use 1e-3 per example in Lillicrap et al., RMSprop at 1e-4 in
    Nøkland's code and SGD at 0.1 on ImageNet in Xiao et al.'s code);
    ``momentum`` [0, 0.95] (0.9 in Xiao et al.'s code, none in Nøkland's);
    ``feedback_scale`` log-uniform [0.1, 10] (``fa``, ``dfa``: the spread of
    the random feedback, which Lillicrap et al. and Nøkland draw uniformly;
    ``sign``: the magnitude ``s_l``); ``weight_scale`` log-uniform [0.05, 2]
    (Lillicrap et al. note that alignment is quickest from small forward
    weights; Nøkland's code starts DFA's forward weights at zero, below the
    range); ``batch_size`` [10, 500]; ``num_layers`` 1-6 and ``h_l_1 ..
    h_l_6`` 30-500 (the backprop MLP's family). ``dfa`` also searches the
    hidden nonlinearity (``tanh``, ``sigmoid``, ``relu``), which Nøkland's
    code offers; ``fa`` and ``sign`` keep theirs fixed (option ``activation``).

Defaults (``DEFAULT_PARAMS``): which values are the papers' and which ours
    All three use softmax cross-entropy and SGD (ours, see above), Glorot
    initial weights (``weight_scale = 1``, ours) and no weight decay (the
    estimators have none).

    * ``fa``: one hidden layer of sigmoid units as in Lillicrap et al.'s
      784-1000-10 network (the paper's), 500 units (ours: the family's
      largest width); learning rate 0.1 on the mean over batches of 100
      (ours; equal to the paper's 1e-3 per example if its updates were per
      example, which we could not check); no momentum (ours); feedback
      ``U(-r_B, r_B)`` at ``feedback_scale = 1`` (ours). Differs from the
      paper in its loss (squared error on sigmoid outputs there) and weight
      decay (1e-6 there).
    * ``dfa``: two hidden tanh layers, the default of Nøkland's code
      (784-800-800-10, narrowed to 500: ours); learning rate 0.02, momentum
      0.9 and batch 100 (ours: the code uses RMSprop at 1e-4 and batch 64,
      which an SGD estimator cannot take over); feedback at
      ``feedback_scale = 1``, i.e. half-width ``sqrt(6 / (10 + n))`` (ours;
      the code's ``1/sqrt(n)`` is ``feedback_scale`` of about 0.41 at
      ``n = 500``); Glorot forward weights (ours: the code starts them at zero).
    * ``sign``: two hidden ReLU layers of 500 units (ours; Xiao et al. use
      ReLU networks); momentum 0.9 (Xiao et al.'s code default, for
      ImageNet); learning rate 0.02 and batch 100 (ours; their ImageNet code:
      0.1 and 256 with weight decay 1e-4); magnitude ``s_l`` at
      ``feedback_scale = 1`` is the s.d. of ``W_{l+1}``'s Glorot
      initialisation, which equals their code's ``1/sqrt(fan_in)`` for equal
      widths (0.045 at 500-500). Their code keeps backprop for the last
      layer by default; ours sends sign feedback through every layer.
"""

from __future__ import annotations

import numpy as np
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from bioplaus.errors import InvalidConfigurationError
from bioplaus.models import _finite
from bioplaus.models._rate_network import ACTIVATIONS, RateNetworkClassifier, batch_outer
from bioplaus.models.architecture import MAX_LAYERS, hidden_layer_space, hidden_sizes, unused_widths
from bioplaus.models.registry import ModelSpec

__all__ = [
    "FeedbackAlignmentBase", "FeedbackAlignmentClassifier", "DirectFeedbackAlignmentClassifier",
    "SignSymmetryClassifier", "FA_SPEC", "DFA_SPEC", "SIGN_SPEC",
]


def _softmax(a):
    z = a - a.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


class FeedbackAlignmentBase(RateNetworkClassifier):
    """Fully connected softmax network whose hidden errors arrive by the rule's feedback path.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default (500,)
        Units of each hidden layer (1-6 layers).
    activation : {"tanh", "sigmoid", "relu"}
        Hidden nonlinearity ``f`` (default per rule).
    learning_rate : float, default 0.05
        SGD step ``eta`` (per unit of the batch-mean loss's gradient).
    momentum : float in [0, 1), default 0.0
        Momentum ``mu`` of the SGD velocity.
    feedback_scale : float > 0, default 1.0
        Spread of the random feedback (``fa``, ``dfa``: uniform half-width in
        units of the Glorot range) or magnitude of the sign feedback (``sign``:
        in units of the forward initial s.d.).
    weight_scale : float >= 0, default 1.0
        Forward initial weights' uniform half-width in units of the Glorot range.
    batch_size : int, default 100
        Rows per update.
    epochs : int, default 10
        Passes of :meth:`fit` (``partial_fit`` makes one pass).
    shuffle : bool, default True
        Reshuffle each epoch of :meth:`fit` (with ``random_state``).
    dtype : {"float32", "float64"}, default "float32"
    record_alignment : bool, default False
        Also compute backprop's gradient per batch and record the angles (``alignment_``).
    random_state : int, RandomState or None
        Seeds initial weights, feedback matrices and :meth:`fit`'s shuffling.

    Attributes
    ----------
    feedback_ : list of arrays, the feedback matrix of each hidden layer, shape
        ``(n_src, n_l)`` (``n_src`` the size of the error it carries).
    and those of :class:`~bioplaus.models._rate_network.RateNetworkClassifier`.
    """

    _default_activation = "sigmoid"

    def __init__(self, hidden_layer_sizes=(500,), activation=None, learning_rate=0.05, momentum=0.0,
                 feedback_scale=1.0, weight_scale=1.0, batch_size=100, epochs=10, shuffle=True,
                 dtype="float32", record_alignment=False, random_state=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.feedback_scale = feedback_scale
        self.weight_scale = weight_scale
        self.batch_size = batch_size
        self.epochs = epochs
        self.shuffle = shuffle
        self.dtype = dtype
        self.record_alignment = record_alignment
        self.random_state = random_state

    # ------------------------------------------------------------ configuration

    def _activation_name(self):
        name = self._default_activation if self.activation is None else self.activation
        if name not in ACTIVATIONS:
            raise InvalidConfigurationError(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        return name

    def _rule_config(self):
        self._activation_name()
        self._number("learning_rate", self.learning_rate, 0.0)
        self._number("feedback_scale", self.feedback_scale, 0.0, low_open=True)
        self._number("weight_scale", self.weight_scale, 0.0)

    def _learning_rates(self):
        return (float(self.learning_rate),) * (len(self._sizes) - 1)

    # ------------------------------------------------------------ network

    def _init_network(self, sizes, rng_init, rng_feedback, dtype):
        ws = float(self.weight_scale)
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            r = ws * np.sqrt(6.0 / (n_in + n_out))
            self._W.append(rng_init.uniform(-r, r, size=(n_in, n_out)).astype(dtype))
            self._b.append(np.zeros(n_out, dtype=dtype))
        self._init_feedback(sizes, rng_feedback, dtype)

    def _init_feedback(self, sizes, rng, dtype):
        self._B = []

    def _random_feedback(self, rng, n_src, n_dst, dtype):
        r = float(self.feedback_scale) * np.sqrt(6.0 / (n_src + n_dst))
        return rng.uniform(-r, r, size=(n_src, n_dst)).astype(dtype)

    def _forward(self, X):
        """Pre-activations ``a`` (one per layer) and activities ``h`` (``h[0] = X``)."""
        f = ACTIVATIONS[self._activation_name()][0]
        h, a = [X], []
        L = len(self._W)
        for l in range(L):
            z = h[-1] @ self._W[l]
            z += self._b[l]
            a.append(z)
            if l < L - 1:
                h.append(f(z))
        return a, h

    def _feedback(self, layer, delta_above, e):
        """Error signal (before ``f'``) sent to hidden layer ``layer``; shape ``(B, n_{layer+1})``."""
        raise NotImplementedError

    def _hidden_deltas(self, a, h, e, feedback=None):
        """``delta_l`` of every layer (output last) for output error ``e``; ``feedback`` defaults to the rule's."""
        fprime = ACTIVATIONS[self._activation_name()][1]
        feedback = self._feedback if feedback is None else feedback
        L = len(self._W)
        deltas = [None] * L
        deltas[L - 1] = e
        for l in range(L - 2, -1, -1):
            deltas[l] = feedback(l, deltas[l + 1], e) * fprime(a[l], h[l + 1])
        return deltas

    def _backprop_feedback(self, layer, delta_above, e):
        return delta_above @ self._W[layer + 1].T

    def _batch_gradients(self, X, T, want_bp):
        a, h = self._forward(X)
        p = _softmax(a[-1])
        B = X.shape[0]
        loss = -np.sum(T * np.log(np.maximum(p, np.finfo(p.dtype).tiny))) / B
        e = (p - T) / self._dtype.type(B)
        deltas = self._hidden_deltas(a, h, e)
        gW = [batch_outer(h[l], deltas[l]) for l in range(len(deltas))]
        gb = [d.sum(axis=0) for d in deltas]
        # bounds of the updates' entries (B products summed), for the finiteness check
        dmax = [_finite.amax(d) for d in deltas]
        self._grad_bounds = ([_finite.grown([B * _finite.amax(h[l]) * dmax[l]], 2 * B, self._dtype)
                              for l in range(len(deltas))],
                             [_finite.grown([B * m], B, self._dtype) for m in dmax])
        bp = None
        if want_bp:
            bp_deltas = self._hidden_deltas(a, h, e, feedback=self._backprop_feedback)
            bp = [h[l].T @ bp_deltas[l] for l in range(len(deltas) - 1)]
        return loss, gW, gb, bp

    def _output_scores(self, X):
        return self._forward(X)[0][-1]

    def _probabilities(self, scores):
        return _softmax(np.asarray(scores, dtype=np.float64))

    @property
    def feedback_(self):
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "classes_")
        return [b.copy() for b in self._B]


class FeedbackAlignmentClassifier(FeedbackAlignmentBase):
    """Feedback alignment (Lillicrap et al. 2016): ``delta_l = (delta_{l+1} B_l) * f'(a_l)``, ``B_l`` fixed random.

    See :class:`FeedbackAlignmentBase` for the parameters; default activation: sigmoid.
    """

    _default_activation = "sigmoid"

    def _init_feedback(self, sizes, rng, dtype):
        # B_l carries the error of layer l+1 (size sizes[l+2]) to hidden layer l (size sizes[l+1])
        self._B = [self._random_feedback(rng, sizes[l + 2], sizes[l + 1], dtype) for l in range(len(sizes) - 2)]

    def _feedback(self, layer, delta_above, e):
        return delta_above @ self._B[layer]


class DirectFeedbackAlignmentClassifier(FeedbackAlignmentBase):
    """Direct feedback alignment (Nøkland 2016): ``delta_l = (e B_l) * f'(a_l)``, ``B_l`` fixed random.

    See :class:`FeedbackAlignmentBase` for the parameters; default activation: tanh.
    """

    _default_activation = "tanh"

    def _init_feedback(self, sizes, rng, dtype):
        self._B = [self._random_feedback(rng, sizes[-1], sizes[l + 1], dtype) for l in range(len(sizes) - 2)]

    def _feedback(self, layer, delta_above, e):
        return e @ self._B[layer]


class SignSymmetryClassifier(FeedbackAlignmentBase):
    """Sign symmetry (Liao et al. 2016; Xiao et al. 2018): ``B_l = s_l sign(W_{l+1})^T`` after every update.

    See :class:`FeedbackAlignmentBase` for the parameters; default activation: relu.
    """

    _default_activation = "relu"

    def _init_feedback(self, sizes, rng, dtype):
        # s_l: feedback_scale x the s.d. of W_{l+1}'s initial uniform distribution, fixed for the fit
        self._sign_scale = [float(self.feedback_scale) * np.sqrt(2.0 / (sizes[l + 1] + sizes[l + 2]))
                            for l in range(len(sizes) - 2)]
        self._B = [None] * (len(sizes) - 2)

    def _after_update(self):
        for l, s in enumerate(self._sign_scale):
            self._B[l] = np.sign(self._W[l + 1].T) * self._dtype.type(s)

    def _feedback(self, layer, delta_above, e):
        return delta_above @ self._B[layer]


class BackpropSGDClassifier(FeedbackAlignmentBase):
    """The rules' backprop control: ``delta_l = (delta_{l+1} W_{l+1}^T) * f'(a_l)`` (Rumelhart, Hinton &
    Williams 1986), the same network, loss and SGD with momentum as ``fa``, ``dfa`` and ``sign``.

    See :class:`FeedbackAlignmentBase` for the parameters (``feedback_scale`` has no effect: the
    feedback is the forward weights); default activation: sigmoid. ``feedback_`` returns the
    current ``W_{l+1}^T``.
    """

    _default_activation = "sigmoid"

    def _init_feedback(self, sizes, rng, dtype):
        self._B = []

    def _feedback(self, layer, delta_above, e):
        return self._backprop_feedback(layer, delta_above, e)

    @property
    def feedback_(self):
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "classes_")
        return [self._W[l + 1].T.copy() for l in range(len(self._W) - 1)]


# ------------------------------------------------------------ registry entries


def _space(extra):
    space = {
        "batch_size": IntDistribution(10, 500),
        "learning_rate": FloatDistribution(1e-3, 0.5, log=True),
        "momentum": FloatDistribution(0.0, 0.95),
        "feedback_scale": FloatDistribution(0.1, 10.0, log=True),
        "weight_scale": FloatDistribution(0.05, 2.0, log=True),
        **extra,
    }
    space.update(hidden_layer_space())
    return space


def fa_search_space(options=None):
    """``fa``'s searched hyperparameters (see the module docstring for the ranges' sources)."""
    return _space({})


def dfa_search_space(options=None):
    """``dfa``'s searched hyperparameters; also the hidden nonlinearity (Nøkland 2016 compares them)."""
    return _space({"activation": CategoricalDistribution(["tanh", "sigmoid", "relu"])})


def sign_search_space(options=None):
    """``sign``'s searched hyperparameters (see the module docstring)."""
    return _space({})


def bp_sgd_search_space(options=None):
    """``bp-sgd``'s: the rules' ranges without the feedback scale (its feedback is the forward
    weights), the nonlinearity searched over the rules' three (sigmoid: ``fa``, tanh: ``dfa``,
    ReLU: ``sign``)."""
    space = _space({"activation": CategoricalDistribution(["tanh", "sigmoid", "relu"])})
    del space["feedback_scale"]
    return space


#: ``model_options.fa|dfa|sign``: fixed estimator settings (JSON-schema fragments; see ModelSpec.options).
OPTIONS = {
    "dtype": {"type": "string", "enum": ["float32", "float64"], "default": "float32"},
    "activation": {"type": ["string", "null"], "enum": ["tanh", "sigmoid", "relu", None], "default": None,
                   "description": "hidden nonlinearity where it is not searched (null: the rule's own)"},
    "record_alignment": {"type": "boolean", "default": False,
                         "description": "record the angle between the rule's hidden updates and backprop's"},
}


def _builder(cls):
    def build(params, *, input_shape, n_classes, epochs, random_state, options=None):
        """An unfitted classifier for one sampled point (``options``: :data:`OPTIONS`; a searched
        ``activation`` overrides the option)."""
        options = _spec_of[cls].resolve_options(options)
        return cls(
            hidden_layer_sizes=hidden_sizes(params),
            activation=params.get("activation", options["activation"]),
            learning_rate=float(params["learning_rate"]),
            momentum=float(params["momentum"]),
            feedback_scale=float(params.get("feedback_scale", 1.0)),  # bp-sgd: none
            weight_scale=float(params["weight_scale"]),
            batch_size=int(params["batch_size"]),
            epochs=int(epochs),
            dtype=options["dtype"],
            record_alignment=options.get("record_alignment", False),
            random_state=random_state,
        )

    build.__name__ = f"build_{cls.__name__}"
    return build


def _layers(*widths):
    return {"num_layers": len(widths),
            **{f"h_l_{i}": (widths[i - 1] if i <= len(widths) else 100) for i in range(1, MAX_LAYERS + 1)}}


_spec_of = {}


#: Lillicrap et al. (2016) MNIST network (784-1000-10 sigmoid) narrowed to 784-500-10; rate, batch, scales ours.
FA_DEFAULT_PARAMS = {"batch_size": 100, "learning_rate": 0.1, "momentum": 0.0, "feedback_scale": 1.0,
                     "weight_scale": 1.0, **_layers(500)}
#: Nøkland's code default (2x800 tanh) narrowed to 2x500; rate, momentum, batch, scales ours (see the docstring).
DFA_DEFAULT_PARAMS = {"batch_size": 100, "learning_rate": 0.02, "momentum": 0.9, "feedback_scale": 1.0,
                      "weight_scale": 1.0, "activation": "tanh", **_layers(500, 500)}
#: ReLU and momentum 0.9 as Xiao et al.'s (2018) code; 2x500, rate, batch, scales ours.
SIGN_DEFAULT_PARAMS = {"batch_size": 100, "learning_rate": 0.02, "momentum": 0.9, "feedback_scale": 1.0,
                       "weight_scale": 1.0, **_layers(500, 500)}

FA_SPEC = ModelSpec(
    name="fa", label="Feedback alignment", build=_builder(FeedbackAlignmentClassifier),
    search_space=fa_search_space, default_params=FA_DEFAULT_PARAMS,
    description="Lillicrap et al. (2016): hidden errors through fixed random feedback matrices",
    options=OPTIONS, inactive=unused_widths,
)
DFA_SPEC = ModelSpec(
    name="dfa", label="Direct feedback alignment", build=_builder(DirectFeedbackAlignmentClassifier),
    search_space=dfa_search_space, default_params=DFA_DEFAULT_PARAMS,
    description="Nøkland (2016): the output error sent to every hidden layer through fixed random matrices",
    options=OPTIONS, inactive=unused_widths,
)
SIGN_SPEC = ModelSpec(
    name="sign", label="Sign symmetry", build=_builder(SignSymmetryClassifier),
    search_space=sign_search_space, default_params=SIGN_DEFAULT_PARAMS,
    description="Liao et al. (2016), Xiao et al. (2018): feedback through the signs of the forward weights",
    options=OPTIONS, inactive=unused_widths,
)
#: ours: sign's setting (2x500, rate 0.02, momentum 0.9, batch 100) with the sigmoid of fa's default
BP_SGD_DEFAULT_PARAMS = {"batch_size": 100, "learning_rate": 0.02, "momentum": 0.9, "weight_scale": 1.0,
                         "activation": "sigmoid", **_layers(500, 500)}
BP_SGD_SPEC = ModelSpec(
    name="bp-sgd", label="Backprop MLP (SGD)", build=_builder(BackpropSGDClassifier),
    search_space=bp_sgd_search_space, default_params=BP_SGD_DEFAULT_PARAMS,
    description="backprop through the rules' own network and optimizer (SGD with momentum): their control",
    backprop=True,
    options={k: v for k, v in OPTIONS.items() if k != "record_alignment"},  # its angle is 0 by construction
    inactive=unused_widths,
)
_spec_of.update({FeedbackAlignmentClassifier: FA_SPEC, DirectFeedbackAlignmentClassifier: DFA_SPEC,
                 SignSymmetryClassifier: SIGN_SPEC, BackpropSGDClassifier: BP_SGD_SPEC})
