"""Checks for chapter 6, beyond batch norm.

Exercises (what the student passes to :func:`bncourse.checks.check`):

``ch6_group_norm``              ``group_norm(x, num_groups, gamma, beta, eps) -> out``, x: (N, C, H, W)
                                float64, gamma/beta: (C,); statistics per example and group of C/G
                                consecutive channels
``ch6_layer_norm_backward``     ``layer_norm_backward(dout, x, gamma, eps) -> (dx, dgamma, dbeta)``,
                                x: (N, D); a derivation the chapter does not show (gamma varies along the
                                axis the statistics are taken over, unlike in batch norm)
``ch6_predict_two_samples``     a number committed before the experiment: |x_hat| of training-mode batch
                                norm on a batch of two samples
``ch6_predict_batch_dependence`` letters committed before the experiment: which layers give a sample an
                                output that does not depend on the other sample of a batch of two
``ch6_debug_seq_norm``          ``layer_norm_seq(x, gamma, beta, eps) -> out``, x: (N, T, D): a token-wise
                                layer norm whose planted bug (statistics over time) the student fixes
"""
from __future__ import annotations


import numpy as np

from .core import CheckFailure, Exercise, Mistake, expect_inputs_unchanged, register
from .predict import PredictChoice, PredictNumber
from .shared import unpack

__all__ = ["GroupNormExercise", "LayerNormBackward", "PredictTwoSamples", "PredictBatchDependence", "DebugSeqNorm",
           "group_norm_reference", "GROUP_NORM_MISTAKES", "layer_norm_backward_reference"]


def _std(x, axes, eps, ddof=0):
    mu = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, ddof=ddof, keepdims=True)
    return (x - mu) / np.sqrt(var + eps)


def _grouped(x, g, eps, ddof=0, interleaved=False):
    n, c, h, w = x.shape
    if interleaved:     # channel k goes to group k % G (a reshape to (N, C/G, G, H, W))
        xg = x.reshape(n, c // g, g, h, w)
        return _std(xg, (1, 3, 4), eps, ddof).reshape(x.shape)
    xg = x.reshape(n, g, c // g, h, w)
    return _std(xg, (2, 3, 4), eps, ddof).reshape(x.shape)


def group_norm_reference(x, num_groups, gamma, beta, eps):
    """(N, C, H, W) group norm in NumPy, the same as ``torch.nn.functional.group_norm``."""
    c = x.shape[1]
    return _grouped(x, num_groups, eps) * gamma.reshape(1, c, 1, 1) + beta.reshape(1, c, 1, 1)


def _gn_args(case):
    return tuple(case[k] for k in ("x", "num_groups", "gamma", "beta", "eps"))


def _gn_affine(case, x_hat, gamma_shape=(1, -1, 1, 1)):
    return x_hat * case["gamma"].reshape(gamma_shape) + case["beta"].reshape(gamma_shape)


#: the mistakes of ch6_group_norm (gamma and beta left as (C,) raise on the cases with W != C, which run names
#: before any case is verified)
GROUP_NORM_MISTAKES = (
    Mistake("layer_norm", "you took the statistics over all channels of each example (that is layer norm, G = 1); "
            "group norm takes them per group of C/G consecutive channels",
            lambda c: {"out": _gn_affine(c, _std(c["x"], (1, 2, 3), c["eps"]))}),
    Mistake("instance_norm", "you took the statistics per channel of each example (that is instance norm, G = C); "
            "group norm takes them per group of C/G consecutive channels",
            lambda c: {"out": _gn_affine(c, _std(c["x"], (2, 3), c["eps"]))}),
    Mistake("batch_norm", "you took the statistics over the batch (that is batch norm); group norm never mixes "
            "examples: statistics per example and group",
            lambda c: {"out": _gn_affine(c, _std(c["x"], (0, 2, 3), c["eps"]))}),
    Mistake("interleaved", "your groups interleave the channels (reshape to (N, C/G, G, H, W)); a group is C/G "
            "consecutive channels: reshape to (N, G, C/G, H, W)",
            lambda c: {"out": _gn_affine(c, _grouped(c["x"], c["num_groups"], c["eps"], interleaved=True))}),
    Mistake("unbiased", "you normalized with the unbiased variance (ddof=1); use the biased one (divide by the number "
            "of values)", lambda c: {"out": _gn_affine(c, _grouped(c["x"], c["num_groups"], c["eps"], ddof=1))}),
    Mistake("no_affine", "gamma and beta are missing: out = x_hat * gamma + beta, per channel",
            lambda c: {"out": _grouped(c["x"], c["num_groups"], c["eps"])}),
    Mistake("eps_outside", "eps is outside the square root: use sqrt(var + eps)",
            lambda c: {"out": _gn_affine(c, _outside(c["x"], c["num_groups"], c["eps"]))}),
    Mistake("default_eps", "{output} ignores the eps it is given and uses 1e-5 (a default argument or a constant)",
            lambda c: {"out": _gn_affine(c, _grouped(c["x"], c["num_groups"], 1e-5))}),
)


def _outside(x, g, eps):
    n, c, h, w = x.shape
    xg = x.reshape(n, g, c // g, h, w)
    mu = xg.mean(axis=(2, 3, 4), keepdims=True)
    sd = xg.std(axis=(2, 3, 4), keepdims=True)
    return ((xg - mu) / (sd + eps)).reshape(x.shape)


@register
class GroupNormExercise(Exercise):
    name = "ch6_group_norm"
    title = "group norm forward pass, x of shape (N, C, H, W)"
    references = ("bncourse.normalizations:group_norm", "bncourse.normalizations:GroupNorm",
                  "torch.nn.functional:group_norm", "torch:group_norm", "torch.nn:GroupNorm")
    hints = (
        "group norm never mixes examples: each example's channels are cut into G groups, and each group is "
        "standardized on its own, over its channels and all positions",
        "reshape x to (N, G, C // G, H, W), take the statistics over the last three axes (shape (N, G, 1, 1, 1)), "
        "and reshape back; gamma and beta stay per channel, reshaped to (1, C, 1, 1)",
        "x_hat = (x - mean) / sqrt(biased var + eps) per (example, group); out = gamma * x_hat + beta; a group is "
        "C // G CONSECUTIVE channels, so the group axis comes before the channel-in-group axis",
    )
    mistakes = GROUP_NORM_MISTAKES

    def cases(self, rng):
        out = []
        # (N, C, H, W, G, eps); the last has W == C so a gamma broadcast along W gives a wrong value
        for n, c, h, w, g, eps in ((3, 6, 4, 5, 2, 1e-5), (2, 4, 3, 3, 4, 0.1), (2, 8, 2, 3, 1, 1e-3),
                                   (4, 6, 3, 6, 3, 1e-5)):
            x = rng.normal(size=(n, c, h, w)) * rng.uniform(0.5, 3.0, size=(1, c, 1, 1)) \
                + rng.uniform(-3, 3, size=(n, c, 1, 1))
            gamma = rng.uniform(0.5, 2.0, size=c) * rng.choice([-1.0, 1.0], size=c)
            out.append({"x": x, "num_groups": g, "gamma": gamma, "beta": rng.uniform(-2, 2, size=c), "eps": eps})
        return out

    def run(self, fn, case):
        try:
            out = fn(*(case[k] for k in ("x", "num_groups", "gamma", "beta", "eps")))
            return {"out": out}
        except ValueError as e:
            if "broadcast" in str(e):
                raise CheckFailure("gamma and beta have shape (C,) and must broadcast along the channel axis 1: "
                                   f"reshape them to (1, C, 1, 1) (NumPy said: {e})") from None
            raise

    def verify(self, case, result):
        expect_inputs_unchanged(self, result)
        self.expect_outputs(case, result, {"out": group_norm_reference(*_gn_args(case))}, rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------------------------
# Layer norm backward (a derivation)
# --------------------------------------------------------------------------------------------
def _ln_parts(x, eps, ddof=0, axis=1):
    mu = x.mean(axis=axis, keepdims=True)
    var = x.var(axis=axis, ddof=ddof, keepdims=True)
    return (x - mu) / np.sqrt(var + eps), np.sqrt(var + eps)


def layer_norm_backward_reference(dout, x, gamma, eps):
    """Layer norm over the last axis of x: (N, D); gamma: (D,). Returns (dx, dgamma, dbeta)."""
    d = x.shape[1]
    x_hat, std = _ln_parts(x, eps)                                      # (N, D), (N, 1)
    g = dout * gamma                                                    # dL/dx_hat, (N, D): gamma inside the sums
    dx = (d * g - g.sum(axis=1, keepdims=True) - x_hat * (g * x_hat).sum(axis=1, keepdims=True)) / (d * std)
    return dx, (dout * x_hat).sum(axis=0), dout.sum(axis=0)


def _ln_dx_variant(dout, x, gamma, eps, *, gamma_outside=False, through_stats=True, ddof=0, axis=1):
    n_sum = x.shape[axis]
    x_hat, std = _ln_parts(x, eps, ddof=ddof, axis=axis)
    if gamma_outside:
        g = dout
    else:
        g = dout * gamma
    if through_stats:
        dx = (n_sum * g - g.sum(axis=axis, keepdims=True)
              - x_hat * (g * x_hat).sum(axis=axis, keepdims=True)) / (n_sum * std)
    else:
        dx = g / std
    return dx * gamma if gamma_outside else dx


def _lnb_args(case):
    return case["dout"], case["x"], case["gamma"], case["eps"]


def _lnb_dgamma(case, **how):
    """dgamma = sum over rows of dout * x_hat, x_hat normalized the ``how`` way (``eps``, ``ddof``, ``axis``)."""
    eps = how.pop("eps", case["eps"])
    return {"dgamma": (case["dout"] * _ln_parts(case["x"], eps, **how)[0]).sum(axis=0)}


def _lnb_dx(case, **how):
    dout, x, gamma, eps = _lnb_args(case)
    return {"dx": _ln_dx_variant(dout, x, how.pop("gamma", gamma), how.pop("eps", eps), **how)}


@register
class LayerNormBackward(Exercise):
    name = "ch6_layer_norm_backward"
    title = "layer norm backward pass, closed form, x of shape (N, D)"
    references = ("bncourse.normalizations:layer_norm", "bncourse.normalizations:LayerNorm",
                  "torch.nn.functional:layer_norm", "torch:layer_norm", "torch.nn:LayerNorm")
    hints = (
        "layer norm is batch norm turned sideways: the statistics of a row are taken over its D features. Follow "
        "chapter 3's derivation, but with the sums over the feature axis, and watch where gamma sits",
        "dgamma and dbeta are still sums over the batch axis (gamma is shared by all rows), shape (D,); dx is "
        "(N, D), and every sum inside it runs over axis 1 with count D. gamma varies along that axis, so it "
        "cannot be pulled out of those sums as in batch norm",
        "with g = dout * gamma (N, D) and std = sqrt(var + eps) per row: dx = (D * g - sum_j g - x_hat * sum_j "
        "(g * x_hat)) / (D * std), sums over the features of each row",
    )
    mistakes = (
        Mistake("swapped", "dgamma and dbeta are swapped: dgamma = sum(dout * x_hat), dbeta = sum(dout)",
                lambda c: dict(zip(("dbeta", "dgamma"), layer_norm_backward_reference(*_lnb_args(c))[1:]))),
        Mistake("dbeta_over_features", "dbeta is summed over the features (axis=1); beta has one value per feature, "
                "shared by all rows: sum dout over the batch, axis=0", lambda c: {"dbeta": c["dout"].sum(axis=1)}),
        Mistake("dbeta_not_summed", "dbeta is not summed: beta is shared by all rows, so sum dout over axis=0",
                lambda c: {"dbeta": c["dout"]}),
        Mistake("dgamma_over_features", "dgamma is summed over the features (axis=1); sum dout * x_hat over the "
                "batch, axis=0", lambda c: {"dgamma": (c["dout"] * _ln_parts(c["x"], c["eps"])[0]).sum(axis=1)}),
        Mistake("dgamma_bn_stats", "dgamma uses x_hat with the statistics of batch norm (per feature, over the "
                "batch); layer norm takes them per row, over the features", lambda c: _lnb_dgamma(c, axis=0)),
        Mistake("dgamma_uses_x", "dgamma uses x instead of x_hat",
                lambda c: {"dgamma": (c["dout"] * c["x"]).sum(axis=0)}),
        Mistake("dgamma_unbiased", "dgamma uses an x_hat normalized with the unbiased variance (D - 1); the forward "
                "pass uses the biased one", lambda c: _lnb_dgamma(c, ddof=1)),
        Mistake("dgamma_default_eps", "dgamma uses an x_hat normalized with eps = 1e-5 instead of the eps it is given",
                lambda c: _lnb_dgamma(c, eps=1e-5)),
        Mistake("gamma_outside", "you pulled gamma out of the sums, as batch norm allows; in layer norm the sums run "
                "over the features, and gamma differs from feature to feature: multiply dout by gamma first, "
                "g = dout * gamma, then sum g and g * x_hat over each row", lambda c: _lnb_dx(c, gamma_outside=True)),
        Mistake("stop_gradient", "your dx ignores the path through the row's mean and variance (the stop-gradient "
                "mistake): both depend on every feature of the row", lambda c: _lnb_dx(c, through_stats=False)),
        Mistake("batch_norm_dx", "this is batch norm's dx (statistics per feature, sums over the batch); layer norm "
                "takes the statistics of each row, so the sums run over axis 1 with count D",
                lambda c: _lnb_dx(c, axis=0)),
        Mistake("dx_unbiased", "your dx is for a layer norm with the unbiased variance (D - 1); the forward pass uses "
                "the biased one", lambda c: _lnb_dx(c, ddof=1)),
        Mistake("dx_default_eps", "your dx ignores the eps it is given and uses 1e-5 (a default argument or a "
                "constant): the backward pass must use the forward pass's eps", lambda c: _lnb_dx(c, eps=1e-5)),
        Mistake("dx_no_gamma", "your dx forgets gamma: dL/dx_hat = dout * gamma",
                lambda c: _lnb_dx(c, gamma=np.ones_like(c["gamma"]))),
    )

    def cases(self, rng):
        out = []
        # (N, D, eps); the third has N == D, where statistics over the wrong axis keep the right shape
        for n, d, eps in ((4, 6, 1e-5), (3, 8, 0.1), (5, 5, 1e-3), (1, 7, 1e-5)):
            x = rng.normal(rng.uniform(-3, 3, size=(n, 1)), rng.uniform(0.5, 3.0, size=(n, 1)), size=(n, d))
            gamma = rng.uniform(0.5, 2.0, size=d) * rng.choice([-1.0, 1.0], size=d)
            out.append({"dout": rng.normal(size=(n, d)), "x": x, "gamma": gamma, "eps": eps})
        return out

    def run(self, fn, case):
        ret = fn(*(case[k] for k in ("dout", "x", "gamma", "eps")))
        dx, dgamma, dbeta = unpack(ret, "layer_norm_backward", ("dx", "dgamma", "dbeta"))
        return {"dx": dx, "dgamma": dgamma, "dbeta": dbeta}

    def verify(self, case, result):
        expect_inputs_unchanged(self, result)
        dx, dgamma, dbeta = layer_norm_backward_reference(*_lnb_args(case))
        self.expect_outputs(case, result, {"dbeta": dbeta, "dgamma": dgamma, "dx": dx}, rtol=1e-6, atol=1e-9)


# --------------------------------------------------------------------------------------------
# Predict, then run: batch norm on a batch of two
# --------------------------------------------------------------------------------------------
@register
class PredictTwoSamples(PredictNumber):
    name = "ch6_predict_two_samples"
    title = "predict: |x_hat| of training-mode batch norm on a batch of two samples"
    quantity = "the predicted |x_hat|"
    truth = 1.0
    tolerance = 0.01
    near_misses = {
        "with ONE sample x_hat is 0 (x equals its own mean); with two, each value sits half the difference away "
        "from the mean, and the standard deviation is exactly that half difference": (-0.05, 0.05),
        "BN normalizes with the BIASED variance (divide by 2, not by 1): with the unbiased one you would get "
        "1 / sqrt(2)": (0.69, 0.72),
        "the biased variance of two values is ((a - b) / 2)**2, the square of the half difference; sqrt(2) "
        "comes from dividing by the wrong count": (1.40, 1.43),
    }
    hints = (
        "write the batch as two numbers a and b for one feature: where is their mean, and how far is each from it?",
        "each value is |a - b| / 2 from the mean; the biased variance is the average squared distance from the mean",
        "x_hat = (a - mean) / sqrt(var + eps) with var = ((a - b) / 2)**2; eps is negligible unless a and b are "
        "nearly equal",
    )


# --------------------------------------------------------------------------------------------
# Predict, then run: which layers survive a batch of two
# --------------------------------------------------------------------------------------------
#: the layers of the exercise, as listed in the notebook (letter -> layer)
BATCH_OF_TWO_LAYERS = {
    "A": "nn.BatchNorm2d(8), training mode",
    "B": "nn.GroupNorm(4, 8)",
    "C": "nn.LayerNorm([8, 6, 6])",
    "D": "nn.InstanceNorm2d(8)",
    "E": "nn.BatchNorm2d(8), eval mode",
}


@register
class PredictBatchDependence(PredictChoice):
    name = "ch6_predict_batch_dependence"
    title = "predict: which layers give a sample an output independent of the other sample in its batch"
    options = tuple(BATCH_OF_TWO_LAYERS)
    answer = "BCDE"
    wrongly_chosen = {
        "A": "in training mode BatchNorm2d takes each channel's statistics over (N, H, W): the other sample's "
             "values are half of them",
    }
    wrongly_left_out = {
        "B": "group norm takes its statistics per sample and group of channels; no other sample enters",
        "C": "layer norm takes its statistics per sample, over (C, H, W)",
        "D": "instance norm takes its statistics per sample and channel (and by default keeps no running statistics, "
             "so it does the same in both modes)",
        "E": "in eval mode BN uses its running statistics, fixed numbers: the batch no longer matters",
    }
    hints = (
        "for each layer, ask over which axes its mean and variance are taken, and whether the batch axis N is "
        "among them",
        "BN (training): (N, H, W); LN: (C, H, W); IN: (H, W); GN: (channels of a group, H, W); BN in eval mode "
        "takes no statistics of the input at all",
    )


# --------------------------------------------------------------------------------------------
# Debugging: layer norm of a sequence with the statistics over time
# --------------------------------------------------------------------------------------------
def _seq_norm(x, gamma, beta, eps, axes=(2,), ddof=0, eps_outside=False):
    mu = x.mean(axis=axes, keepdims=True)
    if eps_outside:
        return (x - mu) / (x.std(axis=axes, ddof=ddof, keepdims=True) + eps) * gamma + beta
    return (x - mu) / np.sqrt(x.var(axis=axes, ddof=ddof, keepdims=True) + eps) * gamma + beta


def _seq_args(case):
    return tuple(case[k] for k in ("x", "gamma", "beta", "eps"))


@register
class DebugSeqNorm(Exercise):
    name = "ch6_debug_seq_norm"
    title = "debugging: layer norm of a sequence, x of shape (N, T, D)"
    references = ("bncourse.normalizations:layer_norm", "bncourse.normalizations:LayerNorm",
                  "torch.nn.functional:layer_norm", "torch:layer_norm", "torch.nn:LayerNorm")
    hints = (
        "change only the last token of a sequence and watch the output at the first position: should it move?",
        "layer norm in a sequence model normalizes each token on its own: one mean and one variance per (n, t), "
        "over the D features; which axis does the buggy code reduce?",
        "the statistics must have shape (N, T, 1): one pair per token, so the axis to reduce is the one of size D; "
        "gamma and beta (D,) then broadcast as they are",
    )
    mistakes = (
        Mistake("over_time", "the statistics are still taken over time (axis=1): each position is normalized with "
                "the other positions' values, so a token's output depends on later tokens and on the sequence "
                "length; take them per token, over the features (axis=-1)",
                lambda c: {"out": _seq_norm(*_seq_args(c), axes=(1,))}),
        Mistake("whole_sequence", "the statistics are taken over the whole sequence (axes 1 and 2); layer norm in a "
                "sequence model normalizes each token on its own, over the features (axis=-1)",
                lambda c: {"out": _seq_norm(*_seq_args(c), axes=(1, 2))}),
        Mistake("over_batch", "the statistics are taken over the batch (axis=0), as batch norm does; normalize each "
                "token over its features (axis=-1)", lambda c: {"out": _seq_norm(*_seq_args(c), axes=(0,))}),
        Mistake("unbiased", "you normalized with the unbiased variance (ddof=1); use the biased one",
                lambda c: {"out": _seq_norm(*_seq_args(c), ddof=1)}),
        Mistake("eps_outside", "eps is outside the square root: use sqrt(var + eps)",
                lambda c: {"out": _seq_norm(*_seq_args(c), eps_outside=True)}),
        Mistake("no_affine", "gamma and beta are missing: out = x_hat * gamma + beta",
                lambda c: {"out": _seq_norm(c["x"], 1.0, 0.0, c["eps"])}),
        Mistake("default_eps", "{output} ignores the eps it is given and uses 1e-5 (a default argument or a constant)",
                lambda c: {"out": _seq_norm(*_seq_args(c)[:3], 1e-5)}),
    )

    def cases(self, rng):
        out = []
        # (N, T, D, eps); the second has T == D (statistics over time keep the right shape), the last a single step
        for n, t, d, eps in ((2, 5, 4, 1e-5), (3, 6, 6, 0.1), (2, 4, 3, 1e-3), (3, 1, 5, 1e-5)):
            x = rng.normal(rng.uniform(-2, 2, size=(n, t, 1)), rng.uniform(0.5, 3.0, size=(n, t, 1)), size=(n, t, d))
            out.append({"x": x, "gamma": rng.uniform(0.5, 2.0, size=d) * rng.choice([-1.0, 1.0], size=d),
                        "beta": rng.uniform(-1, 1, size=d), "eps": eps})
        return out

    def run(self, fn, case):
        out = fn(*(case[k] for k in ("x", "gamma", "beta", "eps")))
        if type(out).__module__.startswith("torch") and hasattr(out, "detach"):
            out = out.detach().cpu().numpy()
        return {"out": out}

    def verify(self, case, result):
        expect_inputs_unchanged(self, result)
        self.expect_outputs(case, result, {"out": _seq_norm(*_seq_args(case))}, rtol=1e-6, atol=1e-8)
