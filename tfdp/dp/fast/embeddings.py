"""ViT token layers: the class token and the position embedding (tfdp.models.vit).

Both add a learned tensor to each example's activations, so example i's gradient is its own output
gradient at the positions the tensor lands on: dz_i[0] for the class token (prepended at position
0), dz_i itself for the position table (added to every position). Neither depends on `a`. The
per-example gradients are no larger than dz, which the engine already holds, so the base class's
norms and sums over them cost nothing worth a closed form.
"""

import tensorflow as tf

from tfdp.dp.fast import rules
from tfdp.models import vit


@rules.register(vit.ClassToken)
class ClassTokenRule(rules.LayerRule):
  """Per-example gradient of the [1, 1, hidden] token: dz[:, 0] as [B, 1, 1, hidden]."""

  def per_example_gradients(self, layer, a, dz):
    return [tf.expand_dims(dz[:, :1, :], axis=1)]


@rules.register(vit.PositionEmbedding)
class PositionEmbeddingRule(rules.LayerRule):
  """Per-example gradient of the [tokens, hidden] table: dz itself, [B, tokens, hidden]."""

  def per_example_gradients(self, layer, a, dz):
    return [dz]
