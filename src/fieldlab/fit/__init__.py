"""Fitting: the loop for one signal (and a stack of fields), its options, engines, schedule and metrics."""

from fieldlab.fit.config import FitConfig
from fieldlab.fit.engine import FusedEngine, StackEngine, Stepper
from fieldlab.fit.loop import FitResult, Fitter, fit, resolve_device
from fieldlab.fit.metrics import field_psnrs, metrics_for, psnr, psnr_from_mse, ssim
from fieldlab.fit.schedule import Schedule
from fieldlab.fit import miner  # noqa: F401,E402  (registers MINER's engine)

__all__ = ["FitConfig", "FitResult", "Fitter", "FusedEngine", "Schedule", "StackEngine", "Stepper", "field_psnrs",
           "fit", "metrics_for", "psnr", "psnr_from_mse", "resolve_device", "ssim"]
