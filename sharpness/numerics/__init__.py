"""The number conventions every stage shares: which dtypes, which float32 precision, a mean with its error.

* :mod:`~sharpness.numerics.dtypes`: the floating-point dtypes a user may name (``--dtype``, ``TrainConfig.dtype``,
  ``SharpnessTracker(dtype=)``), one table;
* :mod:`~sharpness.numerics.precision`: the float32 precision policy of an analysis (TF32 off unless asked for,
  cuDNN benchmark off), set on entry and restored on exit;
* :mod:`~sharpness.numerics.stats`: a sample mean with its standard error or standard deviation, the one place
  either is computed.
"""
