"""The memory a study job declares: the parent, its fold processes with the model's declared peak, the data."""

from __future__ import annotations

import pytest

from bioplaus.data import dataset_info
from bioplaus.models import available_models, get_model
from bioplaus.study import resources


def test_declared_memory_adds_the_model_peak_beyond_the_allowance():
    fashion = dataset_info("fashion").prepared_nbytes()
    base = resources.study_mem_mb(3, 3, fashion)
    assert base == int(600 + 3 * 300 + 4 * fashion / 1e6)  # 2378 MB: the workflow's figure before models declared peaks
    # a peak within the allowance changes nothing; beyond it, every fold process declares it
    small = resources.PER_FOLD_PROCESS_MB - resources.PROCESS_BASE_MB
    assert resources.study_mem_mb(3, 3, fashion, model_mb=small) == base
    assert resources.study_mem_mb(3, 3, fashion, model_mb=small + 100) == base + 3 * 100
    # folds run on min(threads, n_folds) processes
    assert resources.study_mem_mb(1, 3, fashion, 500) == int(600 + 750 + 4 * fashion / 1e6)
    assert resources.study_mem_mb(8, 3, fashion, 500) == resources.study_mem_mb(3, 3, fashion, 500)


@pytest.mark.parametrize("model", sorted(available_models()))
def test_every_model_declares_a_finite_peak(model):
    spec = get_model(model)
    mb = spec.peak_memory_mb({}, (1, 28, 28))
    assert mb >= 0 and mb < 1e5
    assert (mb == 0) == (spec.memory_mb is None)


def test_cnn_peak_is_its_largest_point_and_grows_with_the_image():
    from bioplaus.models.cnn._network import training_step_nbytes

    spec = get_model("cnn")
    largest_maps = training_step_nbytes((1, 28, 28), (64,) * 5, (2,) * 5, 1, 3, 500, 10) / 1e6
    assert spec.peak_memory_mb({}, (1, 28, 28)) == pytest.approx(largest_maps)  # 5 blocks, kernel 2, padding 3
    assert spec.peak_memory_mb({}, (3, 32, 32)) > 1.2 * largest_maps  # CIFAR-10: 37x37 maps
    # options that hold more: threads with their own patch buffers, a fixed large prediction chunk
    assert spec.peak_memory_mb({"n_jobs": 3}, (1, 28, 28)) > largest_maps + 200
    assert spec.peak_memory_mb({"predict_batch_size": 4096}, (1, 28, 28)) > 5000


def test_segdend_peak_follows_its_batch_and_state_bound():
    from bioplaus.models.segdend.estimator import SegregatedDendriteClassifier
    from bioplaus.models.segdend.spec import build, largest_state_params
    from bioplaus.models.segdend.state import State

    spec = get_model("segdend")
    one, twenty = spec.peak_memory_mb({"batch_size": 1}, (1, 28, 28)), spec.peak_memory_mb({"batch_size": 20}, (1, 28, 28))
    est = build(largest_state_params(), input_shape=(1, 28, 28), n_classes=10, epochs=1, random_state=0)
    cfg = est._make_config(784, 10)
    assert cfg.mem == 100 and cfg.sizes == (784, 500, 500, 500, 500, 500, 500, 10) and cfg.use_spiking_feedforward
    per_row = State(cfg, 1, "float32").nbytes()
    assert twenty == pytest.approx(one - SegregatedDendriteClassifier().max_state_mb * 2**20 / 1e6
                                   + 20 * per_row / 1e6, rel=0.02)
    # batch 1: a test batch's state bound dominates
    assert 64 * 2**20 / 1e6 < one < 64 * 2**20 / 1e6 + 50
    assert spec.peak_memory_mb({"batch_size": 1, "max_state_mb": 16}, (1, 28, 28)) < one - 40
