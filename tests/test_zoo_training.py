"""A one-epoch DP run on synthetic data completes for every model of the zoo."""

import pytest

from tfdp import config
from tfdp import models
from tfdp.training import loop as training


@pytest.mark.parametrize("name", sorted(models.MODELS))
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
