"""Calibration: measure on a GPU machine (``device/``, torch scripts), fit the speed model here (``fit/``)."""
