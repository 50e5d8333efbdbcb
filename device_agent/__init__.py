"""edgeq device agent: runs quantised models on a device. Never imports TensorFlow or edgeq."""

__version__ = "0.1.0"
