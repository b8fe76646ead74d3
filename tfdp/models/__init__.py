"""BatchNorm-free image classifiers, found by name.

    from tfdp import models
    model = models.build("resnet20", num_classes=10, input_shape=(32, 32, 3))  # or build_model
    sorted(models.MODELS)  # ['cnn', 'convnet', 'densenet121', 'efficientnet_b0', 'linear', ...]
"""

from tfdp import stack as _stack

_stack.require_keras_2()  # The models are Keras 2 code: refuse Keras 3 as tf.keras by name.

# pylint: disable=wrong-import-position
from tfdp.models import layers  # noqa: E402
from tfdp.models import registry  # noqa: E402

# Imported for their @register side effect, which fills MODELS.
from tfdp.models import convnet  # noqa: F401  pylint: disable=unused-import
from tfdp.models import densenet  # noqa: F401  pylint: disable=unused-import
from tfdp.models import efficientnet  # noqa: F401  pylint: disable=unused-import
from tfdp.models import resnet  # noqa: F401  pylint: disable=unused-import
from tfdp.models import resnet18  # noqa: F401  pylint: disable=unused-import
from tfdp.models import scatter  # noqa: F401  pylint: disable=unused-import
from tfdp.models import small  # noqa: F401  pylint: disable=unused-import
from tfdp.models import vit  # noqa: F401  pylint: disable=unused-import
from tfdp.models import wide_resnet  # noqa: F401  pylint: disable=unused-import

MODELS = registry.MODELS
build_model = registry.build_model
build = registry.build_model  # The public name: tfdp.models.build(name, num_classes, input_shape).
assert_no_batchnorm = registry.assert_no_batchnorm
count_params = registry.count_params
check_name = registry.check_name

__all__ = ["MODELS", "assert_no_batchnorm", "build", "build_model", "check_name", "count_params",
           "layers"]
