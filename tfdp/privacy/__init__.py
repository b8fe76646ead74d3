"""Privacy accounting for DP-SGD: pure Python over dp_accounting, no TensorFlow."""
