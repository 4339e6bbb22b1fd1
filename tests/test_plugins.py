"""A model defined outside the package plugs into the registry, the config schema and the workflow."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from bioplaus.config import validate_config
from bioplaus.errors import ConfigError
from bioplaus.models import available_models, get_model
from bioplaus.models.registry import _REGISTERED, load_plugins

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"

TINY_MODEL = '''
"""A tiny model for the plugin test: a logistic-regression SGD classifier."""
from optuna.distributions import FloatDistribution
from sklearn.linear_model import SGDClassifier

from bioplaus.models import ModelSpec


def build(params, *, input_shape, n_classes, epochs, random_state, options=None):
    options = SPEC.resolve_options(options)
    return SGDClassifier(loss="log_loss", alpha=params["alpha"], random_state=random_state,
                         eta0=options["eta0"], learning_rate="constant")


SPEC = ModelSpec(
    name="tinysgd",
    label="Tiny SGD",
    build=build,
    search_space=lambda options: {"alpha": FloatDistribution(1e-5, 1e-1, log=True)},
    default_params={"alpha": 1e-4},
    options={"eta0": {"type": "number", "exclusiveMinimum": 0, "default": 0.05}},
    backprop=True,
)
'''


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    (tmp_path / "tiny_bioplaus_plugin.py").write_text(TINY_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    _REGISTERED.pop("tinysgd", None)
    sys.modules.pop("tiny_bioplaus_plugin", None)


def test_plugin_module_registers_its_model(plugin_dir):
    assert "tinysgd" not in available_models()
    assert load_plugins(["tiny_bioplaus_plugin"]) == ["tinysgd"]
    assert "tinysgd" in available_models()
    assert get_model("tinysgd").label == "Tiny SGD"


def test_config_schema_takes_names_from_the_registries(plugin_dir):
    base = {"datasets": {"digits": {}}, "samplers": ["random"]}
    with pytest.raises(ConfigError, match="tinysgd"):  # not registered: not allowed
        validate_config({**base, "models": ["tinysgd"]}, SCHEMA)
    config = validate_config({**base, "models": ["tinysgd"], "plugins": ["tiny_bioplaus_plugin"],
                              "model_options": {"tinysgd": {"eta0": 0.1}}}, SCHEMA)
    assert config["models"] == ["tinysgd"]
    with pytest.raises(ConfigError, match=r"model_options.*etaa.*did you mean 'eta0'"):
        validate_config({**base, "models": ["tinysgd"], "plugins": ["tiny_bioplaus_plugin"],
                         "model_options": {"tinysgd": {"etaa": 0.1}}}, SCHEMA)


def test_schema_file_lists_no_registry_names():
    """Names are defined once, in the registries: the schema file itself must not enumerate them."""
    text = SCHEMA.read_text()
    for name in ("segdend", "mnist-5k", "cifar10", "tpe"):
        assert name not in text


def test_unknown_plugin_is_a_config_error():
    with pytest.raises(ConfigError, match="plugins: cannot import model module 'no_such_bioplaus_plugin'"):
        load_plugins(["no_such_bioplaus_plugin"])


@pytest.mark.slow
def test_plugin_model_runs_in_the_workflow_without_editing_it(tmp_path):
    (tmp_path / "tiny_bioplaus_plugin.py").write_text(TINY_MODEL)
    (tmp_path / "plugin.yaml").write_text(textwrap.dedent("""\
        seed: 2
        datasets:
          digits: {max_samples: 200}
        models: [tinysgd, mlp]
        plugins: [tiny_bioplaus_plugin]
        samplers: [random]
        n_trials: 3
        epochs: 1
        threads: 1
        repeats: 1
        """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    targets = ["results/digits/tinysgd/random/trials.csv", "results/digits/tinysgd/repeats.csv",
               "results/summary.csv"]
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
         "--configfile", str(tmp_path / "plugin.yaml"), "--cores", "2", *targets],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    trials = pd.read_csv(tmp_path / "results/digits/tinysgd/random/trials.csv")
    assert (trials["state"] == "COMPLETE").sum() == 3 and set(trials["model"]) == {"tinysgd"}
    assert trials["accuracy"].max() > 0.5
    summary = pd.read_csv(tmp_path / "results/summary.csv")
    assert "tinysgd" in set(summary["model"])
