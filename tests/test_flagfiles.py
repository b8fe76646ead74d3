"""Every published configuration in flags/ parses into a valid Config, and its model and clipping
groups build (no data is read: the CIFAR archive is not part of the test data)."""

import glob
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGFILES = sorted(glob.glob(os.path.join(ROOT, "flags", "*.flags")))


def _config(path):
  from absl import flags
  from tfdp import train
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["tfdp.train", f"--flagfile={path}"])
  try:
    return train.config_from_flags()
  finally:
    flags.FLAGS.unparse_flags()


def test_there_is_a_flagfile_per_published_configuration():
  names = {os.path.basename(p) for p in FLAGFILES}
  for model in ("resnet20", "wrn16_4", "efficientnet_b0"):
    for optimizer in ("dp_sgd", "dp_rmsprop", "dp_adagrad"):
      assert f"cifar10_{model}_{optimizer}_eps3.flags" in names
  assert {"cifar10_efficientnet_b0_dp_adam_eps5.flags", "cifar10_wrn16_4_dp_sgd_eps1_de2022.flags",
          "cifar10_convnet_dp_sgd_eps3.flags", "pneumoniamnist_convnet_dp_sgd_eps3.flags",
          "pneumoniamnist_convnet_dp_sgd_eps1.flags", "pneumoniamnist_convnet_sgd_nonprivate.flags",
          "quickstart.flags", "cifar10_scatter_linear_eps3.flags", "cifar10_scatter_cnn_eps3.flags",
          "mnist_scatter_linear_eps3.flags", "fashion_mnist_scatter_linear_eps3.flags"} <= names


@pytest.mark.parametrize("path", FLAGFILES, ids=os.path.basename)
def test_flagfile_is_a_valid_run(path):
  from tfdp import models
  from tfdp.dp import groups
  config = _config(path)
  private = "nonprivate" not in os.path.basename(path)
  assert config.optimizer.private == private
  assert (config.privacy.epsilon is not None) == private
  assert os.path.basename(config.run.output_dir) == os.path.basename(path)[:-len(".flags")]
  shape, classes = {"digits": ((8, 8, 1), 10), "npz": ((28, 28, 1), 2),
                    "folder": ((32, 32, 3), 10), "mnist": ((28, 28, 1), 10),
                    "fashion_mnist": ((28, 28, 1), 10)}[config.data.dataset]
  model = models.build_model(config.model.name, classes, shape, **config.model.kwargs)
  groups.variable_groups(model, config.privacy.clip_groups)  # Raises if K exceeds the layers.
  with open(path) as f:
    lines = [line.strip() for line in f if line.strip()]
  assert lines[0].startswith("#")  # Says what the configuration is.
