"""Embedding layers: Keras's Embedding, and the ViT token layers (tfdp.models.vit).

Embedding: example i's gradient is its output gradients dz_i[t] scattered onto the rows of the
tokens x_i[t] it read, so its squared norm is sum over token pairs (t, t') with x_i[t] = x_i[t'] of
<dz_i[t], dz_i[t']> (a T x T product per example, the table never formed per example), and the
weighted sum scatters every example's weighted dz onto the table once.

ViT layers: the class token and the position embedding.

Both add a learned tensor to each example's activations, so example i's gradient is its own output
gradient at the positions the tensor lands on: dz_i[0] for the class token (prepended at position
0), dz_i itself for the position table (added to every position). Neither depends on `a`. The
per-example gradients are no larger than dz, which the engine already holds, so the base class's
norms and sums over them cost nothing worth a closed form.
"""

import tensorflow as tf

from tfdp.dp.fast import rules
from tfdp.models import vit


@rules.register(tf.keras.layers.Embedding)
class EmbeddingRule(rules.LayerRule):
  """Exact per-example norms and weighted sums of Embedding (tokens of any shape)."""

  def per_example_gradients(self, layer, a, dz):
    tokens, grads = _tokens_and_grads(layer, a, dz)
    one_hot = tf.one_hot(tokens, layer.input_dim, dtype=grads.dtype)  # [B, T, V]: small tables only.
    return [tf.einsum("btv,btd->bvd", one_hot, grads)]

  def squared_norms(self, layer, a, dz):
    tokens, grads = _tokens_and_grads(layer, a, dz)
    same = tf.cast(tf.equal(tokens[:, :, None], tokens[:, None, :]), grads.dtype)
    return [tf.reduce_sum(same * tf.matmul(grads, grads, transpose_b=True), axis=[1, 2])]

  def weighted_sum(self, layer, a, dz, weights):
    tokens, grads = _tokens_and_grads(layer, a, dz)
    weighted = tf.reshape(grads * weights[:, None, None], [-1, grads.shape[-1]])
    return [tf.math.unsorted_segment_sum(weighted, tf.reshape(tokens, [-1]), layer.input_dim)]


def _tokens_and_grads(layer, a, dz):
  """([B, T] int32 token ids, [B, T, D] their output gradients)."""
  batch = tf.shape(dz)[0]
  tokens = tf.reshape(tf.cast(a, tf.int32), [batch, -1])
  return tokens, tf.reshape(dz, [batch, -1, layer.output_dim])


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
