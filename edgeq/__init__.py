"""edgeq: full-integer TFLite quantisation with measured int8/int16 precision plans."""

__version__ = "0.1.0"
