"""Calibration: fit the speed model to measurements (fit.py); the torch scripts run on the GPU."""
