"""Optimizers by flag name: non-private Keras baselines and TF Privacy's DP Keras optimizers."""

from tfdp.optimizers.registry import (OPTIMIZERS, build_optimizer, check_hyperparameters,
                                     default_learning_rate, has_privacy_proof, is_private)
