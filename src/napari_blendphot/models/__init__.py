"""Keras 3 networks of the paper (loaded lazily: importing this package does not import Keras)."""
