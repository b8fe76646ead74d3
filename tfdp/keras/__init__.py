"""tfdp from Keras: bring your own model and data to `fit`, with DP-SGD and an honest ε.

    private = tfdp.keras.make_private(model, optimizer="dp_sgd", l2_norm_clip=1.0,
                                      target_epsilon=3.0, target_delta=1e-5, epochs=10,
                                      train_size=len(x), batch_size=256)
    private.compile(loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    private.fit(tfdp.data.poisson_dataset(x, y, batch_size=256, physical_batch_size=64),
                epochs=10)
"""

from tfdp.keras.callbacks import PrivacyBudget
from tfdp.keras.plan import PrivacyPlan
from tfdp.keras.private_model import PrivateModel, make_private
from tfdp.keras.validation import (FIXED_STATE_LAYERS, PER_EXAMPLE_LAYERS, VERDICTS, LayerVerdict,
                                   PrivacyValidationError, check, fix, group_count, inspect,
                                   register_per_example, register_rule, validate)

__all__ = ["FIXED_STATE_LAYERS", "LayerVerdict", "PER_EXAMPLE_LAYERS", "PrivacyBudget",
           "PrivacyPlan", "PrivacyValidationError", "PrivateModel", "VERDICTS", "check", "fix",
           "group_count", "inspect", "make_private", "register_per_example", "register_rule",
           "validate"]
