"""Our segregated-dendrite simulator against the published code, step for step, on shared draws.

The published code is ``deep_learning.py`` of the GitHub repository
jordan-g/Segregated-Dendrite-Deep-Learning (Guerguiev, Lillicrap & Richards
2017). It is GPL-licensed and is NOT part of this project: this script reads
it at run time from the path given by ``--published`` (the file, or a
checkout / bare git directory of the repository), executes it in a fresh
module and drives its ``Network`` class. Nothing of it is copied here.

``compare`` (default). For each setting (``--settings``; see ``SETTINGS``):

1. Our network (``bioplaus.models.segdend``: ``Weights``, ``Simulator``, float64,
   batch 1) is trained once on the first ``--n-train`` Fashion-MNIST
   training images with recording random generators: every draw of the
   initial weights (uniforms, sparse-feedback choices, symmetric-feedback
   noise) and of training (Wald phase lengths, plateau-time normals,
   symmetric-feedback noise) is logged, per example.
2. The published module is executed with its switches set to the same
   setting, and its ``np.random`` replaced by :class:`SharedDraws`, which
   answers each of its random calls with the draw our simulator made for the
   same purpose, in our order (see that class for the mapping). Its spike
   counts are Poisson counts by inverse CDF of our SplitMix64 spike uniforms
   (``simulator.poisson_from_uniform``), taken in the order our
   simulator consumes them: per step the input first, then the layers bottom
   up, only for the sources whose spikes some pathway reads (the published
   code also samples the others; those get zero counts, which it never reads).
3. The published ``Network.train`` runs on the same images; after every
   example (a wrapped ``t_phase``) a fresh copy of our network, run one time
   step at a time, trains on the same example, and the two are compared:
   every layer's somatic potentials after every time step, then the weights
   ``W``, biases ``b``, feedback weights ``Y`` (and ``c``) and somatic
   potentials ``C`` after the example. The first step / example and quantity
   where they differ by more than ``--tol`` (relative) is reported, and the
   maximum relative difference of each quantity over the run.
4. Test phase: the first ``--n-test`` Fashion-MNIST test images, one at a
   time, through our ``Simulator.output_scores`` and the published
   ``Network.test_weights``, spike uniforms again shared (a separate stream);
   mean output somatic potentials and predictions are compared.

The relative difference of a quantity is ``max|ours - published| /
max|published|`` (over all its entries).

``distribution``. Each with its own random streams: ``--seeds`` runs of the
published code (``np.random.seed(seed)``) and of our estimator
(``SegregatedDendriteClassifier``, ``random_state=seed``, its default float32;
``ours64``: float64)
trained on the first ``--n-train`` training images (one pass, each shuffling
them) and tested on the first ``--n-test`` test images; accuracies are
appended to ``--out`` as they come, then means, standard errors and Welch's
t-test.

Run-time patches of the published module (all here, none in its file):

* its top-level parameter assignments (``use_*`` switches, ``nonspiking_mode``,
  ``record_training_labels`` (off: its bookkeeping fails under NumPy >= 2),
  ``dt``, ``mem``, phase lengths, integration times, ``lambda_max``, ``tau_s``,
  ``tau_L``, ``g_B``, the value of ``g_A``, ``E_E``, ``E_I``) are replaced by the
  setting's values in its source text before it is executed
  (:func:`published_source`; each must match exactly one line);
* matplotlib is switched to the non-interactive Agg backend (no plot is made);
* ``load_MNIST`` is replaced by a function returning the Fashion-MNIST arrays
  in its layout (inputs (784, n) in [0, 1], one-hot targets (10, n));
* ``compare``: its module-global ``np`` is a copy of numpy whose ``random`` is
  :class:`SharedDraws` (any other ``np.random`` use raises); ``shuffle_arrays``
  then keeps the order (``permutation`` is the identity);
  ``Network.t_phase``, ``Network.f_phase`` and ``finalLayer.out_f/out_t``
  are wrapped to observe (not change) each example, each test example and
  each time step;
* both modes: during ``train`` its ``test_weights`` is replaced by a no-op
  (the quick tests every 1,000 examples would also clear the network's state;
  our estimator does not test during training); its printing goes to
  /dev/null.

Usage::

    PYTHONPATH=src python benchmarks/segdend_published.py --published /tmp/published/deep_learning.py
    ... --settings published,spiking_ff_only --n-train 300 --n-test 1000
    ... --quick               # 784-40-10, 20 + 20 steps (rand. lengths), 40 test steps
    ... --ulp-control         # beside each comparison: ours vs ours, initial weights 1 ulp apart
    nice -n 10 ... distribution --seeds 8 --n-train 5000 --n-test 1000 --out /tmp/i16_distribution.txt
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

from bioplaus.data import load_dataset
from bioplaus.models.segdend import _kernel as kernel
from bioplaus.models.segdend import simulator as sim_module
from bioplaus.models.segdend.config import NOISY_SYMMETRIC_SD, PLATEAU_OFFSET_SD, Config
from bioplaus.models.segdend.simulator import RandomStreams, Simulator, poisson_from_uniform
from bioplaus.models.segdend.state import State, Weights

# ------------------------------------------------------------------ settings

#: The published spiking setting (784-500-10, ``f_eta`` 0.21, issue 16).
PUBLISHED = dict(
    sizes=(784, 500, 10), f_etas=(0.21, 0.21), b_etas=(0.0,), l_f_phase=50, l_t_phase=50, l_f_phase_test=250,
    integration_time=20, integration_time_test=220, mem=10, use_conductances=True, use_spiking_feedforward=True,
    use_spiking_feedback=True, use_rand_phase_lengths=True, use_broadcast=True, use_weight_optimization=True,
)
#: Each spiking switch of the study's table, on top of the published setting.
SETTINGS = {
    "published": {},
    "spiking_ff_only": dict(use_spiking_feedback=False),
    "spiking_fb_only": dict(use_spiking_feedforward=False),
    "no_conductances": dict(use_conductances=False),
    "fixed_phase_lengths": dict(use_rand_phase_lengths=False),
    "rand_plateau_times": dict(use_rand_plateau_times=True),
    "apical_conductance": dict(use_apical_conductance=True),
    "sparse_feedback": dict(use_sparse_feedback=True),
    "symmetric_feedback": dict(use_symmetric_weights=True),
    "noisy_symmetric_feedback": dict(use_symmetric_weights=True, noisy_symmetric_weights=True),
    "sparse_symmetric_feedback": dict(use_sparse_feedback=True, use_symmetric_weights=True),
    "feedback_learning": dict(update_feedback_weights=True, b_etas=(0.01,)),
    "two_hidden": dict(sizes=(784, 500, 100, 10), f_etas=(0.21, 0.21, 0.21), b_etas=(0.0, 0.0)),
    "two_hidden_no_broadcast": dict(sizes=(784, 500, 100, 10), f_etas=(0.21, 0.21, 0.21), b_etas=(0.0, 0.0),
                                    use_broadcast=False),
    "plain_init": dict(use_weight_optimization=False, f_etas=(0.05, 0.05)),
    "feedback_bias_learning": dict(update_feedback_weights=True, use_feedback_bias=True, b_etas=(0.01,)),
    "backprop": dict(use_backprop=True, sizes=(784, 500, 100, 10), f_etas=(0.21, 0.21, 0.21), b_etas=(0.0, 0.0)),
    "sparse_feedback_learning": dict(use_sparse_feedback=True, update_feedback_weights=True, b_etas=(0.01,)),
    "noisy_symmetric_no_broadcast": dict(sizes=(784, 500, 100, 10), f_etas=(0.21, 0.21, 0.21), b_etas=(0.0, 0.0),
                                         use_broadcast=False, use_symmetric_weights=True,
                                         noisy_symmetric_weights=True),
    "numbers": dict(dt=0.5, lambda_max=0.3, tau_s=2.0, tau_L=12.0, g_B=0.5, g_A=0.08, E_E=6.0, E_I=-10.0,
                    use_apical_conductance=True, use_rand_plateau_times=True, f_etas=(0.1, 0.3)),
    "nonspiking": dict(use_spiking_feedforward=False, use_spiking_feedback=False, use_conductances=False,
                       use_rand_phase_lengths=False, l_f_phase=2, l_t_phase=2, l_f_phase_test=2,
                       integration_time=1, integration_time_test=1, mem=1),
}
#: The issue's list (the default of ``--settings``).
DEFAULT_SETTINGS = ("published", "spiking_ff_only", "spiking_fb_only", "no_conductances", "fixed_phase_lengths",
                    "rand_plateau_times", "apical_conductance", "sparse_feedback", "symmetric_feedback",
                    "feedback_learning", "two_hidden")
#: ``--quick``: a small network and short phases (the settle part stays >= 5 steps, the plateau offset cap).
QUICK = dict(l_f_phase=20, l_t_phase=20, integration_time=8, l_f_phase_test=40, integration_time_test=30)
QUICK_HIDDEN = 40

#: Our switches and numbers -> the published module's top-level names.
SWITCHES = ("use_rand_phase_lengths", "use_rand_plateau_times", "use_conductances", "use_broadcast",
            "use_spiking_feedback", "use_spiking_feedforward", "use_symmetric_weights", "noisy_symmetric_weights",
            "use_sparse_feedback", "update_feedback_weights", "use_backprop", "use_apical_conductance",
            "use_weight_optimization", "use_feedback_bias")
NUMBERS = ("dt", "mem", "l_f_phase", "l_t_phase", "l_f_phase_test", "integration_time", "integration_time_test",
           "lambda_max", "tau_s", "tau_L", "g_B", "E_E", "E_I")


def make_config(name, quick=False):
    kw = {**PUBLISHED, **SETTINGS[name]}
    if quick:
        if name != "nonspiking":
            kw.update(QUICK)
        kw["sizes"] = (kw["sizes"][0],) + tuple(min(n, QUICK_HIDDEN) for n in kw["sizes"][1:-1]) + (kw["sizes"][-1],)
    return Config(**kw)


# ------------------------------------------------------------ published code


def published_path(arg):
    """The published ``deep_learning.py`` from a file, a checkout, or a bare git directory."""
    p = Path(arg)
    if p.is_file():
        return p
    if (p / "deep_learning.py").is_file():
        return p / "deep_learning.py"
    git_dir = p if (p / "HEAD").is_file() else p / ".git"
    if (git_dir / "HEAD").is_file():
        out = Path(os.environ.get("TMPDIR", "/tmp")) / "segdend_published" / "deep_learning.py"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(subprocess.run(["git", f"--git-dir={git_dir}", "show", "HEAD:deep_learning.py"],
                                       check=True, capture_output=True).stdout)
        return out
    sys.exit(f"--published: no deep_learning.py at {arg}")


def _literal(v):
    if isinstance(v, (bool, np.bool_)):
        return repr(bool(v))
    return repr(v)


def published_source(path, cfg: Config):
    """The published source with its top-level parameters set to ``cfg`` (each replaced line must exist once)."""
    src = Path(path).read_text(encoding="utf-8")
    # record_training_labels: its recording assigns a (1,) array to an array element, an error since NumPy 2
    values = {"nonspiking_mode": False, "record_training_labels": False, **{s: getattr(cfg, s) for s in SWITCHES},
              **{n: getattr(cfg, n) for n in NUMBERS}}
    for name in ("mem", "l_f_phase", "l_t_phase", "l_f_phase_test", "integration_time", "integration_time_test"):
        values[name] = int(values[name])
    values["g_A"] = f"({cfg.g_A!r} if use_apical_conductance else 0)"
    for name, value in values.items():
        text = value if name == "g_A" else _literal(value)
        src, n = re.subn(rf"^{name}[ \t]*=.*$", f"{name} = {text}  # set by segdend_published.py", src,
                         count=1, flags=re.M)
        if n != 1:
            sys.exit(f"the published code has no top-level assignment of {name}: not the expected file")
    return src


def load_published(path, cfg, np_module, data):
    """Execute the published module (switches of ``cfg``, ``np`` = ``np_module``, data = ``data``)."""
    import matplotlib

    matplotlib.use("Agg")
    mod = types.ModuleType("published_deep_learning")
    mod.__file__ = str(path)
    code = compile(published_source(path, cfg), str(path), "exec")
    with contextlib.redirect_stdout(io.StringIO()):
        exec(code, mod.__dict__)  # noqa: S102 - the user's copy of the published code, by design
    mod.np = np_module
    x_train, y_train, x_test, y_test = data
    eye = np.eye(10)
    arrays = (np.ascontiguousarray(x_train.T, dtype=np.float64), eye[y_train].T.copy(),
              np.ascontiguousarray(x_test.T, dtype=np.float64), eye[y_test].T.copy())
    mod.load_MNIST = lambda n_valid=0: tuple(a.copy() for a in arrays)
    return mod


def fashion(n_train, n_test):
    X, y = load_dataset("fashion")
    X = X.reshape(len(X), -1).astype(np.float64)
    return X[:n_train], y[:n_train], X[60000:60000 + n_test], y[60000:60000 + n_test]


# -------------------------------------------------------------- shared draws


class RecordingGenerator:
    """A numpy ``Generator`` that logs every call: ``log`` = [(method, args, kwargs, result)]."""

    def __init__(self, rng):
        self._rng, self.log = rng, []

    def __getattr__(self, name):
        method = getattr(self._rng, name)

        def call(*args, **kwargs):
            out = method(*args, **kwargs)
            self.log.append((name, args, kwargs, np.array(out, copy=True)))
            return out
        return call


def _scale_of(args, kwargs):
    return kwargs.get("scale", args[1] if len(args) > 1 else 1.0)


class SharedDraws:
    """Stands in for ``np.random`` in the published module: our draws for its calls.

    * ``uniform(-1, 1, size)`` (initial weights, in the published order: layers
      from the top, each ``W``, ``b``, then the feedback ``Y`` (and ``c``) of the
      layer below): ``low + (high - low) * u`` for our initialisation's uniforms
      ``u`` of the same array (numpy's own formula);
    * ``choice`` (sparse masks): our zeroed indices, mapped from our transposed
      layout to the published one;
    * ``normal(0, 0.05, ...)`` (symmetric-feedback noise, at initialisation and
      after each update): our noise draws in order (a scalar request gets the
      first number of our array);
    * ``wald(2, 1, n)``: our forward extra lengths for all examples, then (second
      call) our target ones;
    * ``normal(0, 3, (n, size))`` per layer (plateau times): our normals of
      each example (zeros for the output layer, which has no plateau);
    * ``poisson(lam)``: see the module docstring; ``permutation(n)``: identity.
    """

    def __init__(self, cfg, init_log, example_logs, spike_streams, spiking_src):
        self.cfg = cfg
        L = cfg.n_layers
        rnd = [r for m, a, k, r in init_log if m == "random"]
        n_yc = 2 * (L - 1)
        Wb, Yc = rnd[:2 * L], rnd[2 * L:2 * L + n_yc]
        queue = []
        for m in range(L - 1, -1, -1):
            queue += [Wb[2 * m], Wb[2 * m + 1].reshape(-1, 1)]
            if m > 0:
                queue.append(Yc[2 * (m - 1)])
                if cfg.use_feedback_bias:
                    queue.append(Yc[2 * (m - 1) + 1].reshape(-1, 1))
        self._uniforms = queue
        self._choices = []
        for (m, a, k, r), l in zip([e for e in init_log if e[0] == "choice"], range(L - 1)):
            n_l, n_src = cfg.sizes[l + 1], cfg.sizes[cfg.feedback_source(l) + 1]
            row, col = np.divmod(np.asarray(r), n_l)  # index in YT (n_src, n_l) -> in Y (n_l, n_src)
            self._choices.append(col * n_src + row)
        self._noise = [r for m, a, k, r in init_log if m == "normal"]
        wald = [[r for m, a, k, r in log if m == "wald"] for log in example_logs]
        self._wald = [np.array([w[0] for w in wald]), np.array([w[1] for w in wald])] if cfg.use_rand_phase_lengths \
            else []
        plateau = [[r for m, a, k, r in log if m == "normal" and _scale_of(a, k) == PLATEAU_OFFSET_SD]
                   for log in example_logs]
        self._plateau = []
        if cfg.use_rand_plateau_times and L > 1:
            for phase in range(2):
                for l in range(L):
                    if l < L - 1:
                        self._plateau.append(np.vstack([p[phase * (L - 1) + l] for p in plateau]))
                    else:
                        self._plateau.append(np.zeros((len(example_logs), cfg.sizes[-1])))
        for log in example_logs:
            self._noise += [r for m, a, k, r in log if m == "normal" and _scale_of(a, k) == NOISY_SYMMETRIC_SD]
        self.spikes, self.spiking_src = spike_streams, spiking_src
        self._call = 0
        self.counts = {"uniform": 0, "poisson": 0}

    def set_spikes(self, streams, spiking_src):
        self.spikes, self.spiking_src, self._call = streams, spiking_src, 0

    def uniform(self, low=0.0, high=1.0, size=None):
        u = self._uniforms.pop(0)
        if tuple(np.shape(u)) != tuple(size):
            raise RuntimeError(f"uniform draw of shape {size} where ours has {np.shape(u)}: order differs")
        self.counts["uniform"] += 1
        return low + (high - low) * u

    def choice(self, a, size=None, replace=True, p=None):
        return self._choices.pop(0)

    def normal(self, loc=0.0, scale=1.0, size=None):
        if scale == PLATEAU_OFFSET_SD:
            out = self._plateau.pop(0)
            if out.shape != tuple(size):
                raise RuntimeError(f"plateau normals of shape {size} where ours give {out.shape}")
            return loc + out
        out = self._noise.pop(0)
        return out.reshape(-1)[0] if size is None else out.reshape(size)

    def wald(self, mean, scale, size=None):
        out = self._wald.pop(0)
        if out.shape != (size,):
            raise RuntimeError(f"{size} Wald draws requested, ours made {out.shape}")
        return out

    def permutation(self, n):
        return np.arange(n)

    def poisson(self, lam=1.0, size=None):
        lam = np.asarray(lam, dtype=np.float64)
        k = self._call
        self._call = (k + 1) % len(self.spiking_src)
        self.counts["poisson"] += 1
        if not self.spiking_src[k]:
            return np.zeros(lam.shape, np.int64)
        u = self.spikes.uniform((lam.size,))
        return poisson_from_uniform(lam.reshape(-1), u).reshape(lam.shape).astype(np.int64)

    def __getattr__(self, name):
        raise AttributeError(f"the published code called np.random.{name}, which this harness does not map")


def numpy_with_random(random):
    mod = types.ModuleType("numpy_shared_draws")
    mod.__dict__.update(np.__dict__)
    mod.random = random
    return mod


# ------------------------------------------------------------------ compare


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.abs(b).max() if b.size else 0.0
    d = np.abs(a - b).max() if b.size else 0.0
    return float(d / scale) if scale > 0 else float(d)


class Ours:
    """Our network on ``cfg`` (float64, batch 1), with the given initial and training generators."""

    def __init__(self, cfg, init_rng, train_rng):
        self.cfg = cfg
        self.w = Weights.initial(cfg, init_rng, np.float64)
        self.streams = RandomStreams(train_rng, np.float64)
        self.sim = Simulator(cfg, np.float64)
        self.st = State(cfg, 1, np.float64)

    def train(self, x, target):
        self.sim.train_batch(self.st, self.w, x[None, :], target[None, :], self.streams)

    def quantities(self):
        self.w.flush()
        L = self.cfg.n_layers
        q = {}
        for l in range(L):
            q[f"W[{l}]"] = self.w.WT[l].T
            q[f"b[{l}]"] = self.w.b[l]
            q[f"C[{l}]"] = self.st.C[l][0]
        for l in range(L - 1):
            q[f"Y[{l}]"] = self.w.YT[l].T
            if self.cfg.use_feedback_bias:
                q[f"c[{l}]"] = self.w.c[l]
        return q


def published_quantities(net, cfg):
    L = cfg.n_layers
    q = {}
    for l in range(L):
        q[f"W[{l}]"] = net.W[l]
        q[f"b[{l}]"] = net.b[l][:, 0]
        q[f"C[{l}]"] = net.l[l].C[:, 0]
    for l in range(L - 1):
        q[f"Y[{l}]"] = net.Y[l]
        if cfg.use_feedback_bias:
            q[f"c[{l}]"] = net.c[l][:, 0]
    return q


@contextlib.contextmanager
def step_by_step(st, record):
    """Run our compiled loop one step per call and append every layer's C after each step to ``record``."""
    saved_block, saved_steps = sim_module.UNIFORM_BLOCK, kernel.phase_steps

    def steps(*args):
        out = saved_steps(*args)
        record.append([c[0].copy() for c in st.C])
        return out
    sim_module.UNIFORM_BLOCK, kernel.phase_steps = 1, steps
    try:
        yield
    finally:
        sim_module.UNIFORM_BLOCK, kernel.phase_steps = saved_block, saved_steps


class _Uniforms:
    """Our spike streams' uniforms without the in-loop generator (forces the chunked path)."""

    def __init__(self, streams):
        self._s = streams

    def __getattr__(self, name):
        if name == "spike_key":
            raise AttributeError(name)
        return getattr(self._s, name)


def compare_setting(name, published, data, n_train, n_test, tol, seed, quick):
    cfg = make_config(name, quick)
    x_train, y_train, x_test, y_test = data
    x_train, y_train = x_train[:n_train], y_train[:n_train]
    x_test, y_test = x_test[:n_test], y_test[:n_test]
    k = cfg.units_per_class
    targets = np.repeat(np.eye(10)[y_train], k, axis=1)
    init_ss, train_ss, test_ss = np.random.SeedSequence(seed).spawn(3)
    t0 = time.perf_counter()
    # pass 1: our network with recording generators (the draws the published code will get)
    init_rec = RecordingGenerator(np.random.default_rng(init_ss))
    train_rec = RecordingGenerator(np.random.default_rng(train_ss))
    ours = Ours(cfg, init_rec, train_rec)
    example_logs = []
    for i in range(n_train):
        before = len(train_rec.log)
        ours.train(x_train[i], targets[i])
        example_logs.append(train_rec.log[before:])
    fast_final = {k_: v.copy() for k_, v in ours.quantities().items()}
    # pass 2: a fresh copy of ours, step by step, in lockstep with the published code
    ours = Ours(cfg, np.random.default_rng(init_ss), np.random.default_rng(train_ss))
    draws = SharedDraws(cfg, init_rec.log, example_logs,
                        RandomStreams(np.random.default_rng(train_ss), np.float64), ours.st.spiking_src)
    mod = load_published(published, cfg, numpy_with_random(draws), (x_train, y_train, x_test, y_test))
    with contextlib.redirect_stdout(io.StringIO()):
        net = mod.Network(tuple(cfg.sizes[1:]))
    report = {"first": None, "max": {}, "steps_max": 0.0, "series": []}
    q_ours, q_pub = ours.quantities(), published_quantities(net, cfg)
    init_diff = {key: rel(q_ours[key], q_pub[key]) for key in q_pub if not key.startswith("C")}
    for key, v in init_diff.items():
        report["max"][f"init {key}"] = v
        if v > tol and report["first"] is None:
            report["first"] = f"initial weights: {key} differs by {v:.3g}"
    pub_steps, example = [], [0]

    def observe_step(orig):
        def wrapped(self, *args, **kwargs):
            out = orig(self, *args, **kwargs)
            if recording[0]:
                pub_steps.append([layer.C[:, 0].copy() for layer in self.net.l])
            return out
        return wrapped
    recording = [True]
    mod.finalLayer.out_f = observe_step(mod.finalLayer.out_f)
    mod.finalLayer.out_t = observe_step(mod.finalLayer.out_t)
    orig_t_phase = mod.Network.t_phase

    def t_phase(self, x, t, training_num):
        orig_t_phase(self, x, t, training_num)
        i = example[0]
        our_steps = []
        with step_by_step(ours.st, our_steps):
            real = ours.streams
            ours.streams = _Uniforms(real)
            try:
                ours.train(x_train[i], targets[i])
            finally:
                ours.streams = real
        if ours.st.u_per_step == 0:  # rate mode: ours runs whole phases (no per-step view)
            pass
        elif len(our_steps) == len(pub_steps):
            Lf = int(mod.l_f_phase)
            for s, (a, b) in enumerate(zip(our_steps, pub_steps)):
                for l, (ca, cb) in enumerate(zip(a, b)):
                    d = rel(ca, cb)
                    report["steps_max"] = max(report["steps_max"], d)
                    if d > tol and report["first"] is None:
                        where = f"forward step {s + 1}" if s < Lf else f"target step {s + 1 - Lf}"
                        report["first"] = f"example {i}, {where}: C[{l}] differs by {d:.3g}"
        elif report["first"] is None:
            report["first"] = f"example {i}: {len(pub_steps)} published steps, ours {len(our_steps)}"
        pub_steps.clear()
        qa, qb = ours.quantities(), published_quantities(self, cfg)
        report["series"].append(max(rel(qa[key], qb[key]) for key in qb))
        for key in qb:
            d = rel(qa[key], qb[key])
            report["max"][key] = max(report["max"].get(key, 0.0), d)
            if d > tol and report["first"] is None:
                report["first"] = f"example {i} (after its update): {key} differs by {d:.3g}"
        if draws.spikes.spike_counter != ours.streams.spike_counter and report["first"] is None:
            report["first"] = (f"example {i}: spike uniforms used, published {draws.spikes.spike_counter}, "
                               f"ours {ours.streams.spike_counter}")
        example[0] += 1
    mod.Network.t_phase = t_phase
    mod.Network.test_weights, orig_test = (lambda self, n_test=0: 0.0), mod.Network.test_weights
    with contextlib.redirect_stdout(io.StringIO()):
        net.train(cfg.f_etas, cfg.b_etas, 1, n_train, False)
    t_train = time.perf_counter() - t0
    chunk = max(rel(ours.quantities()[key], fast_final[key]) for key in fast_final)
    # test phase: shared test spike uniforms, one example at a time
    test_state = State(cfg, 1, np.float64, apical=cfg.use_conductances and cfg.use_apical_conductance)
    test_streams = RandomStreams(np.random.default_rng(test_ss), np.float64)
    draws.set_spikes(RandomStreams(np.random.default_rng(test_ss), np.float64), test_state.spiking_src)
    scores_pub = []
    orig_f_phase = mod.Network.f_phase

    def f_phase(self, x, t, training_num, training=False):
        orig_f_phase(self, x, t, training_num, training)
        if not training:
            scores_pub.append(self.l[-1].average_C_f[:, 0].copy())
    mod.Network.f_phase = f_phase
    mod.Network.test_weights = orig_test
    recording[0] = False
    t1 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        err_pub = net.test_weights(n_test=n_test)
    scores_ours = np.vstack([ours.sim.output_scores(ours.w, x_test[i:i + 1], test_streams) for i in range(n_test)])
    scores_pub = np.vstack(scores_pub)
    t_test = time.perf_counter() - t1
    pred_o = scores_ours.reshape(n_test, -1, k).mean(-1).argmax(1)
    pred_p = scores_pub.reshape(n_test, -1, k).mean(-1).argmax(1)
    test_rel = max(rel(a, b) for a, b in zip(scores_ours, scores_pub))
    first_test = next((i for i, (a, b) in enumerate(zip(scores_ours, scores_pub)) if rel(a, b) > tol), None)
    return dict(cfg=cfg, report=report, chunk=chunk, test_rel=test_rel, first_test=first_test,
                disagree=int((pred_o != pred_p).sum()), acc_ours=float((pred_o == y_test).mean()),
                acc_pub=float((pred_p == y_test).mean()), err_pub=err_pub, t_train=t_train, t_test=t_test,
                counts=dict(draws.counts))


def ulp_control(name, data, n_train, tol, seed, quick):
    """Round-off growth of a setting: ours against ours with every initial weight moved by about 1 ulp.

    Returns ``(first, max)``: the first example after which the two differ by
    more than ``tol`` (None if never) and the largest relative difference. A
    setting in which this control diverges as early as the published
    comparison amplifies round-off; the difference is then no modelling one.
    """
    cfg = make_config(name, quick)
    x_train, y_train = data[0][:n_train], data[1][:n_train]
    targets = np.repeat(np.eye(10)[y_train], cfg.units_per_class, axis=1)
    init_ss, train_ss, _ = np.random.SeedSequence(seed).spawn(3)
    a, b = (Ours(cfg, np.random.default_rng(init_ss), np.random.default_rng(train_ss)) for _ in range(2))
    for arrays in (b.w.WT, b.w.b, b.w.YT, b.w.c):
        for x in arrays:
            if x is not None:
                x *= 1.0 + 2.3e-16
    b.st.reproject(b.w)
    first, worst = None, 0.0
    for i in range(n_train):
        a.train(x_train[i], targets[i])
        b.train(x_train[i], targets[i])
        qa, qb = a.quantities(), b.quantities()
        d = max(rel(qa[k], qb[k]) for k in qa)
        worst = max(worst, d)
        if d > tol and first is None:
            first = i
    return first, worst


def run_compare(args):
    published = published_path(args.published)
    names = args.settings.split(",") if args.settings else list(DEFAULT_SETTINGS)
    for n in names:
        if n not in SETTINGS:
            sys.exit(f"unknown setting {n!r}; choose from {', '.join(SETTINGS)}")
    data = fashion(args.n_train, args.n_test)
    print(f"published code: {published}; {args.n_train} training / {args.n_test} test examples, "
          f"tolerance {args.tol:g}, seed {args.seed}{', quick' if args.quick else ''}", flush=True)
    worst = 0.0
    for name in names:
        r = compare_setting(name, published, data, args.n_train, args.n_test, args.tol, args.seed, args.quick)
        rep = r["report"]
        m = max([rep["steps_max"], *rep["max"].values()])
        worst = max(worst, m, r["test_rel"])
        print(f"\n== {name}: sizes {r['cfg'].sizes}  ({r['t_train']:.0f} s train, {r['t_test']:.0f} s test)")
        print(f"   first divergence: {rep['first'] or 'none'}")
        print(f"   max rel. difference over training: {m:.3g} (per-step C {rep['steps_max']:.3g}); "
              + ", ".join(f"{k_} {v:.2g}" for k_, v in rep["max"].items()))
        print(f"   test: max rel. score difference {r['test_rel']:.3g} (first > tol: {r['first_test']}), "
              f"{r['disagree']} / {args.n_test} predictions differ; accuracy ours {r['acc_ours']:.3f}, "
              f"published {r['acc_pub']:.3f} (its own count {1 - r['err_pub'] / 100:.3f})")
        if args.verbose:
            print("   max rel. difference after each example: "
                  + " ".join(f"{v:.1e}" for v in rep["series"][:args.verbose]))
        print(f"   ours step-by-step vs fast path: {r['chunk']:.3g}; published draws: {r['counts']}", flush=True)
        if args.ulp_control:
            first, ulp_max = ulp_control(name, data, args.n_train, args.tol, args.seed, args.quick)
            print(f"   control, ours vs ours with initial weights moved by ~1 ulp: max rel. difference {ulp_max:.3g}, "
                  f"first example > tol: {first}", flush=True)
    print(f"\nworst relative difference over all settings: {worst:.3g}")


# ------------------------------------------------------------- distribution


def published_accuracy(published, cfg, data, n_train, n_test, seed):
    np.random.seed(seed)
    mod = load_published(published, cfg, np, data)
    with contextlib.redirect_stdout(io.StringIO()):
        net = mod.Network(tuple(cfg.sizes[1:]))
        orig_test = mod.Network.test_weights
        mod.Network.test_weights = lambda self, n_test=0: 0.0
        net.train(cfg.f_etas, cfg.b_etas, 1, n_train, False)
        mod.Network.test_weights = orig_test
        err = net.test_weights(n_test=n_test)
    return 1.0 - err / 100.0


def ours_accuracy(cfg, data, n_train, n_test, seed, dtype="float32"):
    from bioplaus.models.segdend import SegregatedDendriteClassifier

    x_train, y_train, x_test, y_test = data
    names = ("l_f_phase", "l_t_phase", "l_f_phase_test", "integration_time", "integration_time_test", "mem",
             *SWITCHES)
    est = SegregatedDendriteClassifier(hidden_layer_sizes=tuple(cfg.sizes[1:-1]), f_etas=cfg.f_etas,
                                       random_state=seed, dtype=dtype, **{n: getattr(cfg, n) for n in names})
    est.fit(x_train[:n_train].astype(dtype), y_train[:n_train])
    return float(est.score(x_test[:n_test].astype(dtype), y_test[:n_test]))


def welch(a, b):
    from scipy import stats

    a, b = np.asarray(a), np.asarray(b)
    t, p = stats.ttest_ind(a, b, equal_var=False)
    return float(t), float(p)


def run_distribution(args):
    cfg = make_config("published", args.quick)
    data = fashion(args.n_train, args.n_test)
    published = published_path(args.published) if "published" in args.which else None
    out = Path(args.out)
    results = {"published": [], "ours": [], "ours64": []}
    if out.exists():  # resume: keep finished runs
        for line in out.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] in results:
                results[parts[0]].append((int(parts[1]), float(parts[2])))
    with out.open("a") as fh:
        for who in args.which.split(","):
            for seed in range(args.seeds):
                if any(s == seed for s, _ in results[who]):
                    continue
                t0 = time.perf_counter()
                acc = (published_accuracy(published, cfg, data, args.n_train, args.n_test, seed) if who == "published"
                       else ours_accuracy(cfg, data, args.n_train, args.n_test, seed,
                                          "float64" if who == "ours64" else "float32"))
                results[who].append((seed, acc))
                fh.write(f"{who} {seed} {acc:.4f}\n")
                fh.flush()
                print(f"{who} seed {seed}: accuracy {acc:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        summary = []
        for who, rs in results.items():
            a = np.array([x for _, x in rs])
            if len(a) > 1:
                summary.append(f"# {who}: n={len(a)} mean {a.mean():.4f} sd {a.std(ddof=1):.4f} "
                               f"se {a.std(ddof=1) / math.sqrt(len(a)):.4f}")
        for who in ("ours", "ours64"):
            if len(results[who]) > 1 and len(results["published"]) > 1:
                t, p = welch([x for _, x in results[who]], [x for _, x in results["published"]])
                summary.append(f"# Welch t ({who} - published) = {t:.3f}, p = {p:.3f}")
        for line in summary:
            print(line)
            fh.write(line + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="compare", choices=("compare", "distribution"))
    parser.add_argument("--published", required=True,
                        help="the published deep_learning.py, or a checkout / git directory of its repository")
    parser.add_argument("--settings", default="", help=f"comma-separated, of: {', '.join(SETTINGS)}")
    parser.add_argument("--n-train", type=int, default=300)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--tol", type=float, default=1e-9, help="relative difference reported as a divergence")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help=f"hidden layers of at most {QUICK_HIDDEN}, short phases")
    parser.add_argument("--verbose", type=int, default=0, metavar="N",
                        help="also print the max. relative difference after each of the first N examples")
    parser.add_argument("--ulp-control", action="store_true",
                        help="also run ours against ours with 1-ulp different initial weights (round-off growth)")
    parser.add_argument("--seeds", type=int, default=8, help="distribution: seeds per simulator")
    parser.add_argument("--which", default="published,ours",
                        help="distribution: comma-separated of published, ours (float32), ours64 (float64)")
    parser.add_argument("--out", default="segdend_distribution.txt", help="distribution: results file (appended)")
    args = parser.parse_args()
    (run_compare if args.mode == "compare" else run_distribution)(args)


if __name__ == "__main__":
    main()
