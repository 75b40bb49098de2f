"""Fall detection: the one detector that owns the `fall` kind (detector.py), its sources
(the wristband / radar flags, the accelerometer signal model), fusion and confirmation."""
