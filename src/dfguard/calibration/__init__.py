"""Calibration: the motion fusion (`fusion`), then temperature scaling, a decision threshold and an
UNCERTAIN band (`temperature`), fitted on a model's validation videos by the calibrate stage (`stage`).
The verdict names live here, where the verdict is decided."""

from dfguard.calibration.fusion import MotionFusion, fit_motion_fusion
from dfguard.calibration.temperature import FAKE, REAL, UNCERTAIN, Calibrator, fit_calibrator

__all__ = ["FAKE", "REAL", "UNCERTAIN", "Calibrator", "MotionFusion", "fit_calibrator", "fit_motion_fusion"]
