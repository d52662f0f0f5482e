"""Fitting: the loop for one signal (and a stack of fields), its options and the metrics."""

from fieldlab.fit.config import FitConfig
from fieldlab.fit.loop import FitResult, Fitter, fit, resolve_device
from fieldlab.fit.metrics import metrics_for, psnr, psnr_from_mse, ssim
from fieldlab.fit import miner  # noqa: F401,E402  (registers MINER's engine)

__all__ = ["FitConfig", "FitResult", "Fitter", "fit", "metrics_for", "psnr", "psnr_from_mse", "resolve_device", "ssim"]
