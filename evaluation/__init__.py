"""Evaluation of the detectors, outside the runtime processor: the alarm burden of a
simulated population (`vitals burden`) and the rhythm detector on real and synthetic
recordings (`vitals validate rhythm`), with their reference data. Needs the `evaluation`
extra (numpy, scipy)."""
