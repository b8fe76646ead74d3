"""Optimizers by flag name: non-private Keras baselines and TF Privacy's DP Keras optimizers.

The grouped-clipping subclasses of TF Privacy's DP Keras optimizers, for `model.fit`, are here by
name too (tfdp.optimizers.grouped); learning-rate schedules by name are in
tfdp.optimizers.lr_schedules.
"""

from tfdp.optimizers import grouped
from tfdp.optimizers.grouped import (GroupedDPKerasAdagradOptimizer, GroupedDPKerasAdamOptimizer,
                                     GroupedDPKerasRMSpropOptimizer, GroupedDPKerasSGDOptimizer)
from tfdp.optimizers.registry import (OPTIMIZERS, build_optimizer, check_hyperparameters,
                                     check_name, default_learning_rate, has_privacy_proof,
                                     is_private)
