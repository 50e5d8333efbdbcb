"""TensorFlow Lite Micro export: C arrays, exact op resolver, measured arena, templates."""

from edgeq.micro.export import MicroConfig, export_micro

__all__ = ["MicroConfig", "export_micro"]
