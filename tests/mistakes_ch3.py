"""Chapter 3: one wrong implementation per declared mistake, written as a student would (see test_mistake_registry).

Plain NumPy / PyTorch written here, nothing from ``bncourse``.
"""
import numpy as np

# ---------------------------------------------------------------- predictions: the committed numbers
MISTAKES = {
    ("ch3_predict_eps", "eps_negligible"): 1.0,
    ("ch3_predict_eps", "divided_by_sqrt_eps"): 0.63,
    ("ch3_predict_eps", "variance_ratio"): 0.286,
    ("ch3_predict_scale", "unchanged"): 1,
    ("ch3_predict_scale", "grows"): 10.0,
    ("ch3_predict_scale", "squared"): np.float32(0.01),
}

CORRECT = {}
