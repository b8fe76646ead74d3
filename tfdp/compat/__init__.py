"""Bridges to dependencies whose releases differ across the TensorFlow versions tfdp runs on."""
