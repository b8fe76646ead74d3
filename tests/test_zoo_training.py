"""A one-epoch DP run on synthetic data completes for every model of the zoo.

DenseNet-121, EfficientNet-B0 and WRN-40-4 are marked slow (about 3, 1.7 and 1.2 minutes of CPU,
nearly all of it tracing the fast engine's graph): the default suite checks their fast engine
against brute force (tests/test_zoo.py), WRN-40-4's builder is WRN-16-4's (trained here), and
`pytest -m slow` runs their loops too. So are ResNet-18 (30 s; its fast engine is checked in
tests/test_zoo.py and the loop is the one ResNet-20 runs here) and the ScatterNet models (their
runs on real digits are in tests/test_scatter.py and tests/test_feature_statistics.py).
"""

import pytest

from tfdp import config
from tfdp import models
from tfdp.training import loop as training


SLOW = {"densenet121", "efficientnet_b0", "wrn40_4", "resnet18", "scatter_cnn", "scatter_linear"}


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name in SLOW
                                  else name for name in sorted(models.MODELS)])
def test_one_dp_epoch_on_synthetic_data(name, tmp_path):
  run = config.Config(
      data=config.DataConfig(dataset="synthetic", train_examples=32),
      model=config.ModelConfig(name=name),
      privacy=config.PrivacyConfig(epsilon=3.0, delta=1e-3),
      optimizer=config.OptimizerConfig(name="dp_sgd", learning_rate=0.1),
      run=config.RunConfig(batch_size=16, epochs=1, output_dir=str(tmp_path / "run"),
                           export=False))
  metrics = training.train_and_evaluate(run)
  assert metrics["steps"] == 2 and metrics["epsilon"] <= 3.0
  assert 0.0 <= metrics["test_accuracy"] <= 1.0
