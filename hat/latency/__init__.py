"""Latency: on-device measurement (HAT's protocol), latency CSVs, predictors and devices."""
from hat.latency.dataset import HAT_COLUMNS, OUR_COLUMNS, LatencyData, read_latency_csv
from hat.latency.devices import DeviceSpec, resolve_device
from hat.latency.predictors import Predictor, fit, load_predictor, metrics, predictor_for_device

__all__ = ["HAT_COLUMNS", "OUR_COLUMNS", "DeviceSpec", "LatencyData", "Predictor", "fit", "load_predictor", "metrics",
           "predictor_for_device", "read_latency_csv", "resolve_device"]
