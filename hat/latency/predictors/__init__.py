"""Latency predictors: a registry of models (`cost`, the default; `hat-mlp`, HAT's recipe;
`analytic`, ~10 rows; `cost-mlp`, cost model x MLP residual; `lm-cost`, decoder-only LM generation,
with a memory fit), each with a calibrated interval.

    pred = fit(read_latency_csv("lat.csv"), "default", space, context)
    ms, lower, upper = pred.predict_interval(cfgs, 0.9)
    pred.save("lat.pt"); load_predictor("lat.pt", space)
    few = transfer(load_predictor("xeon.pt"), read_latency_csv("pi_50_rows.csv"))

A new model is a `Predictor` subclass decorated with `@register("name")`.
"""
from hat.latency.predictors.base import (DEFAULT_LEVEL, DEFAULT_MODEL, FORMAT, PREDICTORS, Context, Predictor, Rows,
                                         check_transfer_source, conformal_bounds, fit, load_predictor, metrics,
                                         model_class, model_names, predictor_for_device, register, split_indices,
                                         transfer)
from hat.latency.predictors.cost import ANALYTIC_TERMS, Analytic, CostModel, analytic_terms, l1_relative_fit
from hat.latency.predictors.lm import LMCost, fit_lm
from hat.latency.predictors.mlp import CostMLP, HatMLP

MODELS = model_names()

__all__ = ["ANALYTIC_TERMS", "DEFAULT_LEVEL", "DEFAULT_MODEL", "FORMAT", "MODELS", "PREDICTORS", "Analytic", "Context",
           "CostMLP", "CostModel", "HatMLP", "LMCost", "Predictor", "Rows", "analytic_terms", "check_transfer_source",
           "conformal_bounds", "fit", "fit_lm", "l1_relative_fit", "load_predictor", "metrics", "model_class", "model_names",
           "predictor_for_device", "register", "split_indices", "transfer"]
