"""CNNClassifier: learning, the scikit-learn API, invalid geometries,
divergence, threading, and its registry entry."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.utils.estimator_checks import parametrize_with_checks

from float32_checks import FLOAT32_EXPECTED_FAILED

from bioplaus.errors import InvalidConfigurationError
from bioplaus.models import CNNClassifier, get_model
from bioplaus.models.cnn import DEFAULT_PARAMS, check_geometry, check_params

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="module")
def digits():
    """sklearn's 8x8 digits as (n, 1, 8, 8) float32 in [0, 1], split 70/30."""
    data = load_digits()
    X = (data.images / 16.0).astype(np.float32)[:, None]
    return train_test_split(X, data.target, test_size=0.3, random_state=0, stratify=data.target)


def small_cnn(**kwargs):
    params = dict(n_blocks=1, channels=6, kernel_sizes=3, padding=1, batch_size=32, epochs=1,
                  random_state=0)
    params.update(kwargs)
    return CNNClassifier(**params)


# ---------------------------------------------------------------------------
# learning
# ---------------------------------------------------------------------------


def test_default_architecture_learns_digits(digits):
    X_train, X_test, y_train, y_test = digits
    model = CNNClassifier(epochs=5, batch_size=32, random_state=0).fit(X_train, y_train)
    assert model.score(X_test, y_test) >= 0.95
    assert not model.diverged_
    assert model.n_iter_ == 5 and len(model.loss_curve_) == 5
    assert model.loss_curve_[-1] < 0.5 * model.loss_curve_[0]
    assert model.t_ == 5 * int(np.ceil(len(y_train) / 32))
    assert model.feature_shapes_ == [(4, 4, 16), (2, 2, 32)]
    proba = model.predict_proba(X_test)
    assert proba.shape == (len(y_test), 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(model.predict(X_test), model.classes_[proba.argmax(axis=1)])


def test_flat_rows_with_input_shape_equal_images(digits):
    X_train, X_test, y_train, _ = digits
    images = small_cnn(epochs=2).fit(X_train, y_train)
    flat = small_cnn(epochs=2, input_shape=(1, 8, 8)).fit(X_train.reshape(len(X_train), -1), y_train)
    assert flat.n_features_in_ == images.n_features_in_ == 64
    np.testing.assert_allclose(flat.predict_proba(X_test.reshape(len(X_test), -1)),
                               images.predict_proba(X_test), rtol=1e-5, atol=1e-6)
    # three-dimensional input is one channel
    np.testing.assert_allclose(images.predict_proba(X_test[:, 0]), images.predict_proba(X_test))
    with pytest.raises(ValueError, match="input_shape"):
        small_cnn(input_shape=(1, 7, 7)).fit(X_train.reshape(len(X_train), -1), y_train)


def test_multichannel_rectangular_images_stride_and_padding():
    rng = np.random.default_rng(0)
    X = rng.random((60, 3, 12, 9), dtype=np.float32)
    y = (X[:, 0].mean(axis=(1, 2)) > X[:, 1].mean(axis=(1, 2))).astype(int)
    model = CNNClassifier(n_blocks=2, channels=(5, 4), kernel_sizes=(4, 3), stride=2, padding=3,
                          batch_size=16, epochs=2, random_state=0).fit(X, y)
    # 12x9 -> conv (12+6-4)//2+1=8 x (9+6-4)//2+1=6 -> pool 4x3
    #      -> conv (4+6-3)//2+1=4 x (3+6-3)//2+1=4 -> pool 2x2
    assert model.feature_shapes_ == [(4, 3, 5), (2, 2, 4)]
    assert model.predict(X).shape == (60,)


def test_partial_fit_is_one_pass_in_the_given_order(digits):
    X_train, _, y_train, _ = digits
    X, y = X_train[:200], y_train[:200]
    stepwise = small_cnn(batch_size=50)
    stepwise.partial_fit(X, y, classes=np.arange(10))
    stepwise.partial_fit(X, y)
    unshuffled = small_cnn(batch_size=50, epochs=2, shuffle=False).fit(X, y)
    assert stepwise.t_ == unshuffled.t_ == 8
    assert stepwise.n_iter_ == 2
    for a, b in zip(stepwise.network_.parameters(), unshuffled.network_.parameters()):
        np.testing.assert_array_equal(a, b)
    # fit shuffles (from random_state) unless told not to
    shuffled = small_cnn(batch_size=50, epochs=2).fit(X, y)
    assert not np.array_equal(shuffled.network_.linear_weight, unshuffled.network_.linear_weight)
    again = small_cnn(batch_size=50, epochs=2).fit(X, y)
    np.testing.assert_array_equal(shuffled.network_.linear_weight, again.network_.linear_weight)


def test_partial_fit_classes(digits):
    X_train, _, y_train, _ = digits
    model = small_cnn()
    with pytest.raises(ValueError, match="classes"):
        model.partial_fit(X_train[:20], y_train[:20])
    model.partial_fit(X_train[:20], y_train[:20], classes=np.arange(10))
    assert model.classes_.tolist() == list(range(10))  # even those absent from the chunk
    with pytest.raises(ValueError, match="not in classes"):
        model.partial_fit(X_train[:5], np.array([0, 1, 2, 3, 11]))
    with pytest.raises(ValueError, match="differ"):
        model.partial_fit(X_train[:5], y_train[:5], classes=np.arange(11))


def test_prediction_uses_running_statistics_not_the_batch(digits):
    X_train, X_test, y_train, _ = digits
    model = small_cnn(epochs=2, predict_batch_size=7).fit(X_train, y_train)
    whole = model.predict_proba(X_test)
    np.testing.assert_allclose(model.predict_proba(X_test[:1]), whole[:1], rtol=1e-5, atol=1e-7)
    for size in (1000, None):
        model.set_params(predict_batch_size=size)
        np.testing.assert_allclose(model.predict_proba(X_test), whole, rtol=1e-5, atol=1e-7)


def test_small_patch_budget_changes_only_rounding(digits):
    """max_patch_mb bounds the im2col buffer: a budget of a few images' patches
    (chunked convolutions in training and prediction) trains the same network
    as the default budget (one chunk per batch), up to float32 rounding."""
    X_train, X_test, y_train, _ = digits
    default = CNNClassifier(epochs=1, batch_size=64, random_state=3, shuffle=False)
    default.partial_fit(X_train[:128], y_train[:128], classes=np.arange(10))
    # block 1 (8x8 positions x 5*5 entries x 4 bytes = 6400 bytes per image)
    # and block 2 (4x4 x 5*5*16 x 4 = 25600): chunks of 16 and 4 images
    small = clone(default).set_params(max_patch_mb=100_000 / 2**20)
    small.partial_fit(X_train[:128], y_train[:128], classes=np.arange(10))
    assert small.network_.max_patch_bytes == 100_000
    assert small._predict_chunk() == 100_000 // 25600
    np.testing.assert_allclose(small.loss_, default.loss_, rtol=1e-5)
    for a, b in zip(small.network_.parameters(), default.network_.parameters()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(small.predict_proba(X_test), default.predict_proba(X_test),
                               rtol=1e-3, atol=1e-4)


def test_two_threads_match_one(digits):
    X_train, X_test, y_train, _ = digits
    one = CNNClassifier(epochs=1, batch_size=64, random_state=3).fit(X_train, y_train)
    two = clone(one).set_params(n_jobs=2).fit(X_train, y_train)
    np.testing.assert_allclose(two.predict_proba(X_test), one.predict_proba(X_test),
                               rtol=1e-3, atol=1e-4)
    assert (two.predict(X_test) == one.predict(X_test)).mean() > 0.99


# ---------------------------------------------------------------------------
# invalid configurations and divergence
# ---------------------------------------------------------------------------


def test_invalid_geometry_is_raised_at_fit_not_construction(digits):
    X_train, _, y_train, _ = digits
    # 8x8: block 1 -> 8x8 conv, 4x4 pooled; block 2 kernel 7 on 4x4 with padding 1 -> 0x0
    model = CNNClassifier(n_blocks=2, channels=(4, 4), kernel_sizes=(3, 7), padding=1)
    for call in (lambda: clone(model).fit(X_train, y_train),
                 lambda: clone(model).partial_fit(X_train, y_train, classes=np.arange(10))):
        with pytest.raises(InvalidConfigurationError) as info:
            call()
        message = str(info.value)
        for part in ("block 2", "kernel_size=7", "stride=1", "padding=1", "4x4", "0x0"):
            assert part in message


def test_pooling_below_one_pixel_is_invalid():
    # conv output 1x1 pools (floor) to 0x0
    with pytest.raises(InvalidConfigurationError, match="pooled .* to 0x0"):
        check_geometry((1, 3, 3), (4,), (5,), 1, 1)
    assert check_geometry((1, 4, 4), (4,), (5,), 1, 1) == [(1, 1, 4)]  # conv 2x2 -> 1x1


@pytest.mark.parametrize("name,value", [("batch_size", 0), ("learning_rate", -1.0),
                                        ("stride", 0), ("padding", -1), ("n_blocks", 0),
                                        ("channels", (4,)), ("kernel_sizes", (3, 0)),
                                        ("input_shape", (8, 8)), ("n_jobs", 0),
                                        ("bn_momentum", 2.0), ("max_patch_mb", 0),
                                        ("max_patch_mb", float("nan"))])
def test_bad_hyperparameters_name_the_parameter(digits, name, value):
    X_train, _, y_train, _ = digits
    model = CNNClassifier(n_blocks=2, channels=(4, 4), kernel_sizes=(3, 3), padding=1)
    model.set_params(**{name: value})  # construction and set_params never validate
    with pytest.raises(InvalidConfigurationError, match=name):
        model.fit(X_train.reshape(len(X_train), -1), y_train)


def test_check_params_matches_the_reference_geometry():
    space = get_model("cnn").search_space({})
    rng = np.random.default_rng(0)
    n_invalid = 0
    for _ in range(300):
        point = {k: int(rng.integers(d.low, d.high + 1)) if isinstance(d, IntDistribution)
                 else float(d.low) for k, d in space.items()}
        try:
            shapes = check_params(point, (1, 28, 28))
        except InvalidConfigurationError:
            n_invalid += 1
            continue
        assert len(shapes) == point["num_layers"] and min(min(s[:2]) for s in shapes) >= 1
    assert 0 < n_invalid < 300  # the space really contains geometries that do not fit
    # 28 -> 14 -> 7 -> (7+4-10)+1=2 conv, pooled 1 -> kernel 10 on 1x1 with padding 2 fails
    deep = dict(DEFAULT_PARAMS, num_layers=5, k_3=10, k_4=10, k_5=10)
    with pytest.raises(InvalidConfigurationError, match="block 4 .* on a 1x1"):
        check_params(deep, (1, 28, 28))


@pytest.mark.skipif(not SHARED.exists(), reason="../shared is absent")
def test_every_reference_cnn_configuration_is_valid():
    """The 2019 study only logged geometries PyTorch could run (it replaced the
    others); our geometry rule must accept all of them."""
    shapes = {"mnist": (1, 28, 28), "fashion": (1, 28, 28), "cifar10": (3, 32, 32)}
    for dataset, shape in shapes.items():
        path = SHARED / "reference" / f"bo_logs_cnn_{dataset}.json"
        if not path.exists():
            pytest.skip(f"{path} is absent")
        for line in path.read_text().splitlines():
            check_params(json.loads(line)["params"], shape)


@pytest.mark.parametrize("how", ["huge inputs", "huge learning rate"])
def test_divergence_stops_and_predicts_at_chance(digits, how):
    X_train, X_test, y_train, _ = digits
    X = X_train * np.float32(3e38) if how == "huge inputs" else X_train
    lr = 1e30 if how == "huge learning rate" else 1e-3
    model = small_cnn(epochs=3, learning_rate=lr)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warnings either
        model.fit(X, y_train)
        proba = model.predict_proba(X_test)
    assert model.diverged_
    assert model.n_iter_ < model.epochs  # training stopped at the divergence, not after every epoch
    assert model.loss_ == np.inf
    np.testing.assert_allclose(proba, 0.1)
    t = model.t_
    model.partial_fit(X_train[:10], y_train[:10])  # a diverged model stays stopped
    assert model.t_ == t


# ---------------------------------------------------------------------------
# scikit-learn API
# ---------------------------------------------------------------------------


# The checks feed flat rows of 2-20 features with no input_shape, read as
# 1 x 1 x n_features images: one block with kernel 2 and padding 1 fits any of them.
# One check may fail (float32_checks); float32 invariance is tested in
# test_prediction_uses_running_statistics_not_the_batch.


@parametrize_with_checks(
    [CNNClassifier(n_blocks=1, channels=16, kernel_sizes=2, padding=1, batch_size=16, epochs=20,
                   learning_rate=1e-2, random_state=0)],
    expected_failed_checks=lambda estimator: FLOAT32_EXPECTED_FAILED,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


# ---------------------------------------------------------------------------
# registry entry
# ---------------------------------------------------------------------------


def test_registry_entry_builds_the_sampled_configuration():
    spec = get_model("cnn")
    assert spec.name == "cnn" and spec.label == "Backprop CNN"
    space = spec.search_space({})
    expected = {"batch_size": (10, 500), "num_layers": (1, 5), "stride": (1, 3), "padding": (1, 3),
                **{f"ch_{i}": (3, 64) for i in range(1, 6)},
                **{f"k_{i}": (2, 10) for i in range(1, 6)}}
    assert set(space) == set(expected) | {"learning_rate"}
    for name, (low, high) in expected.items():
        assert isinstance(space[name], IntDistribution)
        assert (space[name].low, space[name].high) == (low, high)
    lr = space["learning_rate"]
    assert isinstance(lr, FloatDistribution) and lr.log and (lr.low, lr.high) == (1e-4, 0.05)
    for name, value in spec.default_params.items():  # the default lies in the space
        assert space[name]._contains(space[name].to_internal_repr(value))

    params = dict(spec.default_params, num_layers=3, ch_3=7, k_3=2, stride=2, padding=3,
                  batch_size=64.0)
    model = spec.build(params, input_shape=(1, 28, 28), n_classes=10, epochs=4, random_state=5,
                       options={})
    assert isinstance(model, CNNClassifier)
    assert not hasattr(model, "classes_")
    got = model.get_params()
    assert got["n_blocks"] == 3 and got["channels"] == (16, 32, 7)
    assert got["kernel_sizes"] == (5, 5, 2) and got["stride"] == 2 and got["padding"] == 3
    assert got["batch_size"] == 64 and got["epochs"] == 4 and got["random_state"] == 5
    assert got["input_shape"] == (1, 28, 28)


def test_default_configuration_trains_from_flat_rows():
    spec = get_model("cnn")
    model = spec.build(spec.default_params, input_shape=(1, 28, 28), n_classes=10, epochs=1,
                       random_state=0, options={"n_jobs": 2, "max_patch_mb": 64})
    rng = np.random.default_rng(0)
    X = rng.random((120, 784), dtype=np.float32)
    y = np.repeat(np.arange(10), 12)
    model.partial_fit(X[:100], y[:100], classes=np.arange(10))
    model.partial_fit(X[100:], y[100:], classes=np.arange(10))
    assert model.t_ == 2 and model.feature_shapes_ == [(14, 14, 16), (7, 7, 32)]
    # prediction chunks keep the largest im2col matrix (block 2: 14*14 positions
    # x 5*5*16 entries, float32) within 64 MiB
    assert model._predict_chunk() == (64 * 2**20) // (4 * 14 * 14 * 5 * 5 * 16)
    assert model.predict(X).shape == (120,)


def test_later_calls_on_plain_arrays_skip_checks_but_not_their_numbers_or_errors(digits):
    """partial_fit and predict take a cheap path for float32 arrays of the fitted shape: the same
    numbers as scikit-learn's checked path (fed lists here), and malformed input still raises."""
    images, X_te, y_tr, y_te = digits
    X_tr, X_te = images.reshape(len(images), -1), X_te.reshape(len(X_te), -1)
    fast, slow = small_cnn(batch_size=1), small_cnn(batch_size=1)
    fast.partial_fit(images[:5], y_tr[:5], classes=np.arange(10))
    slow.partial_fit(images[:5], y_tr[:5], classes=np.arange(10))
    for i in range(5, 25):
        rows = images[i:i + 1] if i % 2 else X_tr[i:i + 1]  # images and flat rows alike
        fast.partial_fit(rows, y_tr[i:i + 1], classes=np.arange(10))
        slow.partial_fit(X_tr[i:i + 1].tolist(), y_tr[i:i + 1].tolist())
    assert fast.predict_proba(X_te).tobytes() == slow.predict_proba(X_te.tolist()).tobytes()
    assert fast.predict_proba(images[:3, 0]).tobytes() == slow.predict_proba(X_tr[:3].tolist()).tobytes()
    bad = X_tr[:2].copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fast.partial_fit(bad, y_tr[:2])
    with pytest.raises(ValueError, match="NaN"):
        fast.predict(bad)
    with pytest.raises(ValueError):
        fast.predict(X_tr[:2, :60])
    with pytest.raises(ValueError, match="not in classes"):
        fast.partial_fit(X_tr[:1], np.array([11]))
    with pytest.raises(ValueError, match="differ"):
        fast.partial_fit(X_tr[:1], y_tr[:1], classes=np.arange(9))
    assert fast.predict(X_tr[:3].astype(np.float64)).tolist() == fast.predict(X_tr[:3]).tolist()


def test_warm_up_compiles_on_a_copy(digits):
    """The registry's warm-up trains and predicts on a clone (compiling the kernels before a fold's
    clock starts), leaving the estimator unfitted."""
    images, _, y_tr, _ = digits
    est = get_model("cnn").build(dict(DEFAULT_PARAMS), input_shape=(1, 8, 8), n_classes=10, epochs=1,
                                 random_state=0, options={})
    get_model("cnn").warm_up(est, images[:2].reshape(2, -1), y_tr[:2], np.arange(10))
    assert not hasattr(est, "classes_") and not hasattr(est, "network_")
