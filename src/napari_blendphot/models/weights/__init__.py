"""Shipped trained weights (``*.keras``) with one JSON manifest per model."""
