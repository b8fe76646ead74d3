"""A small Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words"), pre-LN,
built only from layers the fast clipping engine has per-example rules for.

    patches: conv patch x patch, stride patch -> [B, T, hidden], T = (H / patch) * (W / patch)
    tokens:  prepend a learned class token, add a learned position embedding -> [B, T + 1, hidden]
    depth x: x + attn_out(attention(q(LN(x)), k(LN(x)), v(LN(x))));  x + mlp2(act(mlp1(LN(x))))
    head:    LN -> the class token's features -> dense num_classes (logits)

No BatchNorm, no dropout. Every trainable weight sits in a top-level layer (Conv2D, Dense,
LayerNormalization, ClassToken, PositionEmbedding), so `tfdp.dp.fast` taps each one's input and
output gradient; the attention itself is the parameter-free `DotProductAttention`. That is why the
projections are four separate Dense layers and not tf.keras.layers.MultiHeadAttention, whose
projections are nested sublayers the engine cannot reach.

    model = tfdp.models.build_model("vit_tiny", num_classes=10, input_shape=(32, 32, 3))

The defaults give 1,212,490 parameters for 10 classes on 32x32x3 (64 patches) and 1,203,466 on
28x28x1 (49 patches).
"""

import math

import tensorflow as tf

from tfdp.models import registry

LAYER_NORM_EPSILON = 1e-6  # ViT's value; Keras' 1e-3 is large against token variances near 1e-2.
POSITION_STDDEV = 0.02  # ViT's init for the position table: small against unit-scale patch tokens.


@tf.keras.utils.register_keras_serializable(package="tfdp")
class ClassToken(tf.keras.layers.Layer):
  """Prepends one learned token, shared by all examples, to a sequence of tokens.

  Input shape: [batch, tokens, hidden]. Output shape: [batch, tokens + 1, hidden], the learned
  token first. Its one weight, `token`, has shape [1, 1, hidden] and starts at zero, as in ViT.
  """

  def build(self, input_shape):
    self.token = self.add_weight(
        name="token", shape=[1, 1, input_shape[-1]], initializer="zeros", trainable=True
    )
    super().build(input_shape)

  def call(self, inputs):
    token = tf.cast(self.token, inputs.dtype)
    token = tf.broadcast_to(token, [tf.shape(inputs)[0], 1, inputs.shape[-1]])
    return tf.concat([token, inputs], axis=1)


@tf.keras.utils.register_keras_serializable(package="tfdp")
class PositionEmbedding(tf.keras.layers.Layer):
  """Adds a learned embedding to each position of a fixed-length sequence of tokens.

  Input and output shape: [batch, tokens, hidden], `tokens` known when the layer is built. Its one
  weight, `embedding`, has shape [tokens, hidden], initialized N(0, 0.02^2).
  """

  def build(self, input_shape):
    if input_shape[1] is None:
      raise ValueError(
          f"PositionEmbedding needs a fixed number of tokens, got input shape {input_shape}."
      )
    self.embedding = self.add_weight(
        name="embedding",
        shape=[input_shape[1], input_shape[2]],
        initializer=tf.keras.initializers.RandomNormal(stddev=POSITION_STDDEV),
        trainable=True,
    )
    super().build(input_shape)

  def call(self, inputs):
    return inputs + tf.cast(self.embedding, inputs.dtype)[tf.newaxis]


@tf.keras.utils.register_keras_serializable(package="tfdp")
class DotProductAttention(tf.keras.layers.Layer):
  """Multi-head scaled dot-product attention of already projected queries, keys and values.

  Parameter-free: softmax(q_h k_h^T / sqrt(head_dim)) v_h for each head h, heads concatenated.

  Args:
      num_heads: Number of heads; it must divide the feature size of the inputs.

  Input: a list [queries, keys, values], each [batch, tokens, features]. Output: [batch, tokens,
  features], each example attending only over its own tokens.
  """

  def __init__(self, num_heads, **kwargs):
    super().__init__(**kwargs)
    self.num_heads = num_heads

  def build(self, input_shape):
    features = input_shape[0][-1]
    if features % self.num_heads:
      raise ValueError(
          f"DotProductAttention: num_heads={self.num_heads} must divide the {features} "
          "features of the queries."
      )
    super().build(input_shape)

  def call(self, inputs):
    queries, keys, values = (self._split_heads(x) for x in inputs)
    head_dim = queries.shape[-1]
    scores = tf.matmul(queries, keys, transpose_b=True) / math.sqrt(head_dim)
    heads = tf.matmul(tf.nn.softmax(scores, axis=-1), values)  # [B, heads, T, head_dim]
    heads = tf.transpose(heads, [0, 2, 1, 3])
    return tf.reshape(heads, [tf.shape(heads)[0], -1, self.num_heads * head_dim])

  def _split_heads(self, x):
    """[B, T, features] -> [B, heads, T, features / heads]."""
    x = tf.reshape(x, [tf.shape(x)[0], -1, self.num_heads, x.shape[-1] // self.num_heads])
    return tf.transpose(x, [0, 2, 1, 3])

  def get_config(self):
    return {**super().get_config(), "num_heads": self.num_heads}


@registry.register("vit_tiny")
def vit_tiny(
    num_classes,
    input_shape,
    patch_size=4,  # 8x8 patches of a 32x32 image, 7x7 of a 28x28 one: enough tokens to attend.
    hidden_size=192,  # DeiT-Tiny's width (Touvron et al. 2021).
    depth=4,  # A few blocks: DP-SGD's noise grows with the parameter count.
    num_heads=3,  # DeiT-Tiny's heads, 64 features each.
    mlp_dim=384,  # Twice the width, half ViT's ratio of 4, again to keep the parameters few.
    activation="gelu",  # ViT's MLP nonlinearity.
):
  """Builds a pre-LN Vision Transformer for small images.

  Args:
      num_classes: Number of output logits.
      input_shape: (height, width, channels) of one example; height and width must be
          multiples of `patch_size`.
      patch_size: Side of the square, non-overlapping patches, in pixels.
      hidden_size: Token width; a multiple of `num_heads`.
      depth: Number of transformer blocks.
      num_heads: Attention heads per block.
      mlp_dim: Hidden width of each block's MLP.
      activation: Keras activation name of the MLP.

  Returns:
      A `tf.keras.Model` [batch, height, width, channels] -> logits [batch, num_classes], with
      layers named such as "block2_query", "block2_attention" and "block2_mlp1".

  Raises:
      ValueError: If a size is not a positive int, `patch_size` does not divide the image, or
          `num_heads` does not divide `hidden_size`, or `activation` is unknown.
  """
  sizes = dict(
      patch_size=patch_size,
      hidden_size=hidden_size,
      depth=depth,
      num_heads=num_heads,
      mlp_dim=mlp_dim,
  )
  for arg, value in sizes.items():
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ValueError(f"vit_tiny: {arg} must be a positive int, got {value!r}.")
  height, width, _ = input_shape
  if height % patch_size or width % patch_size:
    # A 'valid' patch conv would silently drop the border pixels that do not fill a patch.
    raise ValueError(
        f"vit_tiny: patch_size={patch_size} must divide the image height and width, got "
        f"input_shape={tuple(input_shape)}."
    )
  if hidden_size % num_heads:
    raise ValueError(f"vit_tiny: num_heads={num_heads} must divide hidden_size={hidden_size}.")
  tf.keras.activations.get(activation)  # Fails here, naming the activation, not mid-build.
  num_patches = (height // patch_size) * (width // patch_size)

  inputs = tf.keras.Input(shape=input_shape, name="image")
  x = tf.keras.layers.Conv2D(
      hidden_size, patch_size, strides=patch_size, padding="valid", name="patch_embed"
  )(inputs)
  x = tf.keras.layers.Reshape((num_patches, hidden_size), name="patch_tokens")(x)
  x = ClassToken(name="class_token")(x)
  x = PositionEmbedding(name="position_embedding")(x)
  for block in range(1, depth + 1):
    x = _encoder_block(x, num_heads, mlp_dim, activation, f"block{block}")
  x = tf.keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="encoder_norm")(x)
  # Keep token 0 (the class token): crop the num_patches after it, then drop the token axis.
  x = tf.keras.layers.Cropping1D((0, num_patches), name="class_token_out")(x)
  x = tf.keras.layers.Flatten(name="pre_logits")(x)
  logits = tf.keras.layers.Dense(num_classes, name="logits")(x)
  return tf.keras.Model(inputs, logits, name="vit_tiny")


def _encoder_block(x, num_heads, mlp_dim, activation, name):
  """Pre-LN transformer block: [B, T, hidden] -> [B, T, hidden]."""
  hidden_size = x.shape[-1]
  y = tf.keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name=f"{name}_ln1")(x)
  queries = tf.keras.layers.Dense(hidden_size, name=f"{name}_query")(y)
  keys = tf.keras.layers.Dense(hidden_size, name=f"{name}_key")(y)
  values = tf.keras.layers.Dense(hidden_size, name=f"{name}_value")(y)
  y = DotProductAttention(num_heads, name=f"{name}_attention")([queries, keys, values])
  y = tf.keras.layers.Dense(hidden_size, name=f"{name}_attention_out")(y)
  x = tf.keras.layers.Add(name=f"{name}_add1")([x, y])

  y = tf.keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name=f"{name}_ln2")(x)
  y = tf.keras.layers.Dense(mlp_dim, name=f"{name}_mlp1")(y)
  # A separate Activation, not Dense(activation=...): the dense rule needs the pre-activation
  # output gradient.
  y = tf.keras.layers.Activation(activation, name=f"{name}_act")(y)
  y = tf.keras.layers.Dense(hidden_size, name=f"{name}_mlp2")(y)
  return tf.keras.layers.Add(name=f"{name}_add2")([x, y])
