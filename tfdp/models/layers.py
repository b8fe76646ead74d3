"""Layers for BatchNorm-free image models: weight-standardized convolution and group norm.

Under DP-SGD every example's gradient must depend on that example alone, so the models cannot use
BatchNorm. Group normalization of the activations plus weight standardization of the kernels
recovers most of what BatchNorm gives to optimisation (Qiao et al. 2019, "Micro-Batch Training with
Batch-Channel Normalization and Weight Standardization"; De et al. 2022, "Unlocking High-Accuracy
Differentially Private Image Classification through Scale").
"""

import tensorflow as tf

# The variance of a He-normal 3x3 kernel is 2 / fan_in, about 3.5e-3 at fan_in = 576 (3x3x64), so
# 1e-5 changes the scale of a live kernel by under 0.2%, yet keeps the division finite for an output
# channel whose weights are all equal (variance 0), e.g. after zero initialisation.
WS_EPSILON = 1e-5
GN_EPSILON = 1e-5  # Keras' default 1e-3 is large against per-group variances of small activations.


def standardize(kernel, epsilon=WS_EPSILON):
    """Standardizes a convolution kernel per output channel.

    Args:
        kernel: Tensor of shape [kh, kw, in_channels, out_channels].
        epsilon: Added to the variance before the square root, so constant channels stay finite.

    Returns:
        Tensor of the same shape and dtype: (kernel - mean) / sqrt(var + epsilon), with mean and var
        taken over the axes [0, 1, 2], i.e. one mean and one variance per output channel.
    """
    # Moments in float32 at least: float16 loses most digits of variances around 1e-3.
    compute_dtype = tf.float64 if kernel.dtype == tf.float64 else tf.float32
    weights = tf.cast(kernel, compute_dtype)
    mean, var = tf.nn.moments(weights, axes=[0, 1, 2], keepdims=True)
    standardized = (weights - mean) * tf.math.rsqrt(var + epsilon)
    return tf.cast(standardized, kernel.dtype)


@tf.keras.utils.register_keras_serializable(package="tfdp")
class WSConv2D(tf.keras.layers.Conv2D):
    """Conv2D whose kernel is standardized per output channel before each convolution.

    The trainable variable is the raw kernel; the convolution uses `standardize(kernel)`, so
    gradients flow back through the standardization to the raw weights. Takes the arguments of
    `tf.keras.layers.Conv2D` and nothing else, so `get_config`/`from_config` need no override.

    Input shape: [batch, height, width, in_channels]. Output shape: as for Conv2D.
    """

    def convolution_op(self, inputs, kernel):
        return super().convolution_op(inputs, standardize(kernel))


def group_norm(channels, groups, name=None):
    """Returns a GroupNormalization layer whose group count divides `channels`.

    Args:
        channels: Number of channels of the input it will normalize (last axis).
        groups: Wanted number of groups; lowered to the largest divisor of `channels` not above it.
        name: Optional layer name.

    Returns:
        A `tf.keras.layers.GroupNormalization` with epsilon `GN_EPSILON`. It normalizes each example
        on its own, so unlike BatchNorm it is compatible with per-example privacy.

    Raises:
        ValueError: If `channels` or `groups` is not a positive integer.
    """
    for arg, value in (("channels", channels), ("groups", groups)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"group_norm: {arg} must be a positive int, got {value!r}.")
    groups = min(groups, channels)
    while channels % groups:
        groups -= 1
    return tf.keras.layers.GroupNormalization(groups=groups, epsilon=GN_EPSILON, name=name)


def conv_before_norm(conv, filters, kernel_size, strides, name):
    """A 'same'-padded, He-initialized convolution without bias, for use right before a GroupNorm.

    No bias: the normalization that reads the output subtracts its mean, which cancels a bias.
    `conv` is the class (WSConv2D or tf.keras.layers.Conv2D).
    """
    return conv(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )
