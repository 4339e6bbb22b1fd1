"""The model registry's contract: options, defaults, and which hyperparameters a point actually uses."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from bioplaus.errors import ConfigError
from bioplaus.models import available_models, get_model

BUILTIN = ["mlp", "cnn", "segdend"]


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X[:120] / 16.0).astype(np.float32), y[:120]


def _fit_predict(spec, params, X, y):
    est = spec.build(params, input_shape=(1, 8, 8), n_classes=10, epochs=1, random_state=0,
                     options={"batch_size": 10} if spec.name == "segdend" else None)
    est.partial_fit(X, y, classes=np.arange(10))
    return est.predict_proba(X)


@pytest.mark.parametrize("model", BUILTIN)
def test_defaults_hold_every_key_of_the_space(model):
    spec = get_model(model)
    assert set(spec.default_params) == set(spec.search_space({}))


@pytest.mark.parametrize("model, point, changes", [
    ("mlp", {"num_layers": 1}, {"h_l_2": 31, "h_l_6": 499}),
    ("cnn", {"num_layers": 1, "k_1": 3, "ch_1": 4}, {"ch_2": 60, "k_3": 9}),
    ("segdend", {"num_layers": 1, "h_l_1": 20, "update_feedback_weights": False, "use_apical_conductance": False,
                 "use_symmetric_weights": False},
     {"b_etas": 0.4, "g_A": 0.09, "use_broadcast": False, "h_l_3": 400, "noisy_symmetric_weights": True}),
])
def test_inactive_parameters_change_nothing(digits, model, point, changes):
    """What ``active_params`` calls inactive really has no effect on the fitted model."""
    spec = get_model(model)
    base = {**spec.default_params, **point}
    assert not set(changes) & spec.active_params(base)
    X, y = digits
    np.testing.assert_array_equal(_fit_predict(spec, base, X, y), _fit_predict(spec, {**base, **changes}, X, y))


def test_noise_without_symmetric_feedback_is_run_as_in_2019():
    """A sampled point with the noise switch on but no symmetric feedback builds a valid
    network without the noise (as the 2019 study ran it); with symmetric feedback the
    switch is passed on; the estimator itself still rejects the explicit combination."""
    from bioplaus.errors import InvalidConfigurationError
    from bioplaus.models import SegregatedDendriteClassifier

    spec = get_model("segdend")
    X, y = load_digits(return_X_y=True)
    X = (X[:20] / 16.0).astype(np.float32)
    point = {**spec.default_params, "noisy_symmetric_weights": True, "use_symmetric_weights": False}
    est = spec.build(point, input_shape=(1, 8, 8), n_classes=10, epochs=1, random_state=0)
    assert est.noisy_symmetric_weights is False
    est.partial_fit(X, y[:20], classes=np.arange(10))  # a valid configuration
    on = spec.build({**point, "use_symmetric_weights": True}, input_shape=(1, 8, 8), n_classes=10,
                    epochs=1, random_state=0)
    assert on.noisy_symmetric_weights is True and on.use_symmetric_weights is True
    with pytest.raises(InvalidConfigurationError, match="noisy_symmetric_weights requires"):
        SegregatedDendriteClassifier(noisy_symmetric_weights=True, use_symmetric_weights=False).fit(X, y[:20])


def test_active_parameters_do_change_the_fit(digits):
    spec = get_model("segdend")
    base = {**spec.default_params, "num_layers": 1, "h_l_1": 20, "use_apical_conductance": True}
    assert "g_A" in spec.active_params(base)
    X, y = digits
    assert not np.array_equal(_fit_predict(spec, {**base, "g_A": 0.02}, X, y),
                              _fit_predict(spec, {**base, "g_A": 0.09}, X, y))


@pytest.mark.parametrize("model, options, message", [
    ("segdend", {"batchsize": 20}, r"unknown option 'batchsize' \(did you mean 'batch_size'\?\)"),
    ("segdend", {"units_per_class": "two"}, r"model_options.segdend.units_per_class: 'two'"),
    ("segdend", {"test_batch_size": 0}, r"test_batch_size: 0"),
    ("cnn", {"foo": 1}, r"unknown option 'foo'"),
    ("mlp", {"alpha": -1}, r"model_options.mlp.alpha"),
])
def test_bad_model_options_are_config_errors(model, options, message):
    with pytest.raises(ConfigError, match=message):
        get_model(model).resolve_options(options)


def test_declared_option_defaults_are_filled_in():
    assert get_model("mlp").resolve_options(None) == {"alpha": 0.0}
    assert get_model("segdend").resolve_options({"batch_size": 4}) == {"batch_size": 4}


def test_unknown_model_suggests_a_name():
    with pytest.raises(ConfigError, match="did you mean 'segdend'"):
        get_model("segdnd")
    assert set(BUILTIN) <= set(available_models())
