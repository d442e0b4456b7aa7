"""Chapter 4 self-checks: independent right answers pass, the cases hold what the instructions warn about, and every
message that is not a declared mistake is asserted word for word. Each declared mistake has its wrong implementation,
written from scratch, in tests/mistakes_ch4.py (checked word for word by tests/test_mistake_registry.py)."""
import numpy as np
import pytest
import torch

from bncourse.checks import REGISTRY, check
from check_helpers import check_fails
from check_messages import assert_body, in_place as in_place_message


# ---------------------------------------------------------------- reference solutions (independent code)
def running_update(running_mean, running_var, x, momentum, convention, training=True):
    if not training:
        return running_mean.copy(), running_var.copy()
    n = x.shape[0]
    w = momentum if convention == "pytorch" else 1 - momentum
    return ((1 - w) * running_mean + w * x.mean(0),
            (1 - w) * running_var + w * x.var(0, ddof=1))


def convert_momentum(value, source, target):
    keep_old = {"d2l", "cs231n", "keras"}
    return value if (source in keep_old) == (target in keep_old) else 1 - value


def bias_corrected_ema(values, alpha):
    # written out here: the library's ema_bias_corrected is the exercise's reference, which check() forbids
    out, avg = np.empty_like(values), np.zeros(values.shape[1])
    for t in range(1, len(values) + 1):
        avg = alpha * avg + (1 - alpha) * values[t - 1]
        out[t - 1] = avg / (1 - alpha ** t)
    return out


def population_stats(batches):
    # Welford's update, merged batch by batch (Chan et al.): stable far from 0
    n, mean, m2 = 0, None, None
    for b in batches:
        nb, mb = len(b), b.mean(0)
        m2b = ((b - mb) ** 2).sum(0)
        if mean is None:
            n, mean, m2 = nb, mb, m2b
            continue
        delta = mb - mean
        total = n + nb
        mean = mean + delta * nb / total
        m2 = m2 + m2b + delta ** 2 * n * nb / total
        n = total
    return mean, m2 / (n - 1)


def fold_bn(gamma, beta, running_mean, running_var, eps):
    a = gamma / np.sqrt(running_var + eps)
    return a, beta - a * running_mean


def fold_linear(W, c, gamma, beta, running_mean, running_var, eps):
    a, b = fold_bn(gamma, beta, running_mean, running_var, eps)
    return a[:, None] * W, a * c + b


REFERENCES = {
    "ch4_running_update": running_update, "ch4_convert_momentum": convert_momentum,
    "ch4_bias_corrected_ema": bias_corrected_ema, "ch4_population_stats": population_stats,
    "ch4_fold_bn": fold_bn, "ch4_fold_linear": fold_linear,
}


def test_all_registered():
    assert set(REFERENCES) <= set(REGISTRY)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_passes(name, capsys):
    check(name, REFERENCES[name])
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_passes_fresh_seeds(name):
    for seed in (1, 2, 3):
        check(name, REFERENCES[name], seed=seed, quiet=True)


def test_torch_answers_are_accepted():
    def fold_bn_torch(gamma, beta, mean, var, eps):
        g, b, m, v = map(torch.from_numpy, (gamma, beta, mean, var))
        a = g / torch.sqrt(v + eps)
        return a, b - a * m
    check("ch4_fold_bn", fold_bn_torch, quiet=True)


_fails = check_fails


# ---------------------------------------------------------------- conversion


def test_convert_momentum_names_d2l_not_the_paper():
    # The paper has no momentum; the keep-old 0.9 is d2l's (the study notes' code). An answer that does not
    # know "d2l" as a keep-old source copies 0.9 into PyTorch unchanged, and the check says so.
    from bncourse.checks.ch4_inference import KEEP_OLD
    assert KEEP_OLD == ("d2l", "cs231n", "keras")

    def unknown_d2l(value, source, target):
        keep_old = {"cs231n", "keras"}
        return value if (source in keep_old) == (target in keep_old) else 1 - value
    _fails("ch4_convert_momentum", unknown_d2l, "[value=0.9, source='d2l', target='pytorch']: the converted momentum "
           "is wrong: the number was copied unchanged: the source and the target use opposite conventions")


# ---------------------------------------------------------------- the cases; right answers in float32
def test_population_stats_cases_hold_large_offsets_and_a_constant_feature():
    cases = REGISTRY["ch4_population_stats"]().cases(np.random.default_rng(0))
    offsets = [np.abs(c["x"].mean(0)).max() for c in cases]
    assert max(offsets) > 5e5 and any(5e3 < o < 5e4 for o in offsets)
    assert any(np.ptp(c["x"], axis=0).min() == 0 for c in cases)          # a constant feature


def test_convert_momentum_accepts_float32_arithmetic():
    def in_float32(value, source, target):
        keep_old = {"d2l", "cs231n", "keras"}
        v = torch.tensor(value)                     # float32
        return v.item() if (source in keep_old) == (target in keep_old) else (1 - v).item()
    check("ch4_convert_momentum", in_float32, quiet=True)
    check("ch4_convert_momentum", lambda v, s, t: np.float32(convert_momentum(v, s, t)), quiet=True)


# ---------------------------------------------------------------- merging chunk statistics
def merge_batch_stats(counts, means, variances):
    n = counts.sum()
    mean = (counts[:, None] * means).sum(0) / n
    m2 = (counts[:, None] * (variances + (means - mean) ** 2)).sum(0)
    return mean, m2 / (n - 1)


def test_merge_stats_reference_against_the_stacked_rows():
    ex = REGISTRY["ch4_merge_stats"]()
    for case in ex.cases(np.random.default_rng(5)):
        mean, var = merge_batch_stats(case["counts"], case["means"], case["variances"])
        assert np.allclose(mean, case["x"].mean(0), rtol=1e-12)
        assert np.allclose(var, case["x"].var(0, ddof=1), rtol=1e-9, atol=1e-12)
    for seed in (None, 1, 2):
        check("ch4_merge_stats", merge_batch_stats, seed=seed, quiet=True)
    # torch, float64, is fine too
    check("ch4_merge_stats", lambda c, m, v: tuple(map(torch.from_numpy, merge_batch_stats(c, m, v))), quiet=True)


# ---------------------------------------------------------------- predictions
def test_predict_var_steps_truth_is_what_torch_does():
    from bncourse.checks.ch4_inference import PredictVarSteps
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm1d(1, momentum=0.05).double()
    first = None
    for t in range(1, 300):
        z = torch.randn(32, 1, dtype=torch.float64)
        bn((z - z.mean()) / z.std() * 0.2)              # unbiased variance exactly 0.04
        if first is None and abs(bn.running_var.item() / 0.04 - 1) <= 0.01:
            first = t
    assert first == PredictVarSteps.truth == 152


def test_predict_var_steps_verdicts():
    for ok in (152, 137, 167, np.int64(150), np.float32(160.0), torch.tensor(152.0), 152.4):
        check("ch4_predict_var_steps", ok, quiet=True)
    _fails("ch4_predict_var_steps", 92, "4.6 / (1 - alpha)", "START VALUE")
    _fails("ch4_predict_var_steps", 20, "'memory' of the average")
    _fails("ch4_predict_var_steps", 300, "too high")
    _fails("ch4_predict_var_steps", "152", "must be a number")
    with pytest.raises(NotImplementedError):
        check("ch4_predict_var_steps", None)


def test_predict_eval_verdicts():
    for ok in ("ABDF", "fdba", "A, B, D, F", {"A", "B", "D", "F"}, ["AB", "DF"]):
        check("ch4_predict_eval", ok, quiet=True)
    _fails("ch4_predict_eval", "ABCDF", "C is not true", "torch.no_grad()")
    _fails("ch4_predict_eval", "ABDEF", "E is not true", "requires_grad")
    _fails("ch4_predict_eval", "ABD", "BatchNorm1d refuses a batch of one")
    _fails("ch4_predict_eval", "ABF", "nn.Dropout checks self.training")
    _fails("ch4_predict_eval", "ABDFZ", "'Z' is not one of the options")
    _fails("ch4_predict_eval", 7, "as a string")
    with pytest.raises(NotImplementedError):
        check("ch4_predict_eval", None)


# ---------------------------------------------------------------- debugging the prediction loop
def _labels(model, x, batch_size):
    return torch.cat([model(x[s:s + batch_size]).argmax(dim=1) for s in range(0, len(x), batch_size)]).numpy()


def predict(model, x, batch_size=8):
    was_training = model.training
    model.eval()
    with torch.no_grad():
        labels = _labels(model, x, batch_size)
    model.train(was_training)
    return labels


def test_debug_predict_accepts_fixed_versions():
    check("ch4_debug_predict", predict, quiet=True)
    for seed in (1, 2):
        check("ch4_debug_predict", predict, seed=seed, quiet=True)

    def whole_batch_tensor(model, x, batch_size=8):         # one batch, returns a tensor: also right
        was_training = model.training
        model.eval()
        with torch.no_grad():
            out = model(x).argmax(1)
        model.train(was_training)
        return out
    check("ch4_debug_predict", whole_batch_tensor, quiet=True)


def test_ch4_every_exercise_has_a_hint_ladder():
    for name in [n for n in REGISTRY if n.startswith("ch4_")]:
        hints = REGISTRY[name].hints
        assert 2 <= len(hints) <= 4, name
        assert all(isinstance(h, str) and len(h) > 20 for h in hints), name


# ---------------------------------------------------------------- in place, constant features, no warnings
def test_in_place_mutation_is_named_in_every_ch4_function_exercise():
    def ema_in_place(values, alpha):
        out = bias_corrected_ema(values, alpha)
        values *= 0
        return out
    assert_body(_fails("ch4_bias_corrected_ema", ema_in_place), in_place_message("values"))

    def fold_in_place(gamma, beta, running_mean, running_var, eps):
        running_var += eps
        a = gamma / np.sqrt(running_var)
        return a, beta - a * running_mean
    assert_body(_fails("ch4_fold_bn", fold_in_place), in_place_message("running_var"))

    def fold_linear_in_place(W, c, gamma, beta, running_mean, running_var, eps):
        a, b = fold_bn(gamma, beta, running_mean, running_var, eps)
        W *= a[:, None]
        return W, a * c + b
    assert_body(_fails("ch4_fold_linear", fold_linear_in_place), in_place_message("W"))

    def centres_batches(batches):
        rows = []
        for b in batches:
            rows.append(b.copy())
            b -= b.mean(0)                                       # corrupts the caller's data
        x = np.concatenate(rows)
        return x.mean(0), x.var(0, ddof=1)
    assert_body(_fails("ch4_population_stats", centres_batches), in_place_message("a batch"))


def test_fold_bn_constant_feature_needs_eps_and_warns_nothing(recwarn):
    cases = REGISTRY["ch4_fold_bn"]().cases(np.random.default_rng(0))
    assert any((c["running_var"] == 0).any() for c in cases)

    def guarded(gamma, beta, running_mean, running_var, eps):    # "a constant feature has no scale": a = 0
        std = np.sqrt(running_var + eps)
        a = np.where(running_var > 0, gamma / std, 0.0)
        return a, beta - a * running_mean
    _fails("ch4_fold_bn", guarded, "a has wrong values")
    check("ch4_fold_bn", fold_bn, quiet=True)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_debug_predict_accepts_a_list_of_labels_and_int32():
    check("ch4_debug_predict", lambda m, x, bs=8: [int(v) for v in predict(m, x, bs)], quiet=True)
    check("ch4_debug_predict", lambda m, x, bs=8: predict(m, x, bs).astype(np.int32), quiet=True)


# ---------------------------------------------------------------- every message that is not a declared Mistake,
# word for word (the declared ones: tests/mistakes_ch4.py and tests/test_mistake_registry.py)
def test_ch4_messages_outside_the_mistake_registry_word_for_word():
    from check_messages import assert_body

    assert_body(_fails("ch4_running_update", lambda rm, rv, x, mo, c, t=True: rm),
                "running_update must return a tuple (new_mean, new_var); it returned a numpy.ndarray of shape (3,) "
                "and dtype float64")
    assert_body(_fails("ch4_convert_momentum", lambda v, s, t: str(v)),
                "convert_momentum must return a number; it returned a str")
    assert_body(_fails("ch4_population_stats", lambda b: (np.concatenate(list(b)).mean(0),
                                                          np.concatenate(list(b)).var(0, ddof=1))),
                "population_stats went through the batches a second time; the data may be too large to read twice: "
                "accumulate everything you need in a single pass")
    assert_body(_fails("ch4_population_stats", lambda b: len(b)),
                "your code raised TypeError: batches is an iterator without a length: count the rows as you go")

    def unshifted(batches):
        n, s, s2 = 0, 0.0, 0.0
        for b in batches:
            n, s, s2 = n + len(b), s + b.sum(0), s2 + (b ** 2).sum(0)
        mean = s / n
        return mean, (s2 - n * mean ** 2) / (n - 1)
    assert_body(_fails("ch4_population_stats", unshifted),
                "var loses precision when the data sits far from 0 (here about 1e+04, with a spread of about 1): it "
                "is off by up to {num}, and the tolerance is rtol=1e-09, atol=1e-10. sum(x**2) - n * mean**2 "
                "subtracts two numbers near n * 1e+04**2 and keeps only the digits float64 has left; subtract a fixed "
                "shift (e.g. the first batch's mean) from the data before summing squares, or merge (count, mean, sum "
                "of squared deviations) batch by batch")

    def moments(counts, means, variances):
        n = counts.sum()
        mean = (counts[:, None] * means).sum(0) / n
        ex2 = (counts[:, None] * (variances + means ** 2)).sum(0) / n
        return mean, (ex2 - mean ** 2) * n / (n - 1)
    assert_body(_fails("ch4_merge_stats", moments),
                "var loses precision when the data sits far from 0 (here about 1e+04, with a spread of about 1): it "
                "is off by up to {num}, and the tolerance is rtol=1e-09, atol=1e-10. sum_k n_k (var_k + mean_k**2) - "
                "n * mean**2 subtracts two numbers near n * 1e+04**2 and keeps only the digits float64 has left; add "
                "the within-chunk sums n_k * var_k and the between-chunk term n_k * (mean_k - mean)**2, which never "
                "square the offset")

    def powers(values, alpha):                      # closed form with alpha**(-t): inf after ~1000 steps at 0.5
        t = np.arange(1, len(values) + 1)[:, None]
        with np.errstate(all="ignore"):
            return (1 - alpha) * alpha ** t * np.cumsum(values * alpha ** (-t), axis=0) / (1 - alpha ** t)
    assert_body(_fails("ch4_bias_corrected_ema", powers),
                "out overflows on a long stream (T = 1500): it holds inf or NaN from step {num} on. Powers such as "
                "alpha**(-t) or 1 / alpha**t grow without bound; use the recursion avg = alpha * avg + (1 - alpha) * "
                "value, whose values stay within the range of the data")

    def columns(W, c, g, b, m, v, e):
        a, bb = fold_bn(g, b, m, v, e)
        return W * a, a * c + bb
    assert_body(_fails("ch4_fold_linear", columns),
                "your code raised ValueError: operands could not be broadcast together with shapes (3,5) (3,) . W has "
                "shape (D_out, D_in) and a has shape (D_out,): to scale the rows of W (its outputs) write a[:, None] * "
                "W; W * a would scale the columns of W")


def test_ch4_debug_and_predict_messages_word_for_word():
    from check_messages import assert_body

    def buggy(model, x, batch_size=8):                      # the notebook's planted bug: eval() forgotten
        with torch.no_grad():
            return _labels(model, x, batch_size)
    assert_body(_fails("ch4_debug_predict", buggy),
                "BatchNorm1d refused the last batch, which holds a single row: the model is still in training mode, "
                "where BN needs batch statistics. Call model.eval() before predicting")
    assert_body(_fails("ch4_debug_predict", lambda m, x, bs=8: buggy(m, x, 5)),
                "predicting changed BN's running_mean: the model was in training mode, so every batch updated the "
                "running statistics (and was normalized with its own statistics). Call model.eval() first")

    def no_restore(model, x, batch_size=8):
        model.eval()
        with torch.no_grad():
            return _labels(model, x, batch_size)
    assert_body(_fails("ch4_debug_predict", no_restore),
                "the function must leave the model in the mode it found it in (it was in training mode, and is now in "
                "eval mode: remember model.training and call model.train(was_training) at the end)")

    def always_train(model, x, batch_size=8):
        labels = predict(model, x, batch_size)
        model.train()
        return labels
    assert_body(_fails("ch4_debug_predict", always_train),
                "the function must leave the model in the mode it found it in (it was in eval mode, and is now in "
                "training mode: restore model.train(was_training), do not call model.train() unconditionally)")

    def with_grad(model, x, batch_size=8):
        was_training = model.training
        model.eval()
        labels = torch.cat([model(x[s:s + batch_size]).argmax(1) for s in range(0, len(x), batch_size)])
        model.train(was_training)
        return labels.numpy()
    assert_body(_fails("ch4_debug_predict", with_grad),
                "the forward passes ran with autograd recording: wrap the loop in torch.no_grad(), a prediction needs "
                "no graph")

    def logits(model, x, batch_size=8):
        with torch.no_grad():
            was_training = model.training
            model.eval()
            out = model(x)
            model.train(was_training)
        return out
    assert_body(_fails("ch4_debug_predict", logits),
                "return the predicted class of each row, (N,) integers (logits.argmax(dim=1)), not the logits or "
                "probabilities")

    assert_body(_fails("ch4_predict_var_steps", 92),
                "the predicted number of steps = 92 is outside the accepted range: about 4.6 / (1 - alpha) = 92 steps "
                "is when the START VALUE's weight alpha**t falls below 1 %. Here the start value 1 is 25 times the "
                "true variance 0.04, so 1 % of the true variance needs alpha**t * 0.96 below 0.01 * 0.04")
    assert_body(_fails("ch4_predict_var_steps", 20),
                "the predicted number of steps = 20 is outside the accepted range: about 1 / (1 - alpha) = 20 steps is "
                "the 'memory' of the average; after that many steps the start value still holds about 37 % of the "
                "weight")
    assert_body(_fails("ch4_predict_var_steps", 300),
                "the predicted number of steps = 300 is too high (accepted within ±15 of the answer); reason it "
                "through again (hint('ch4_predict_var_steps')), then run the experiment below")
    expected = {
        "ABCDF": "C is not true: eval() only flips each module's training flag; recording stops under "
                 "torch.no_grad(), a separate switch (evaluate with both)",
        "ABDEF": "E is not true: eval() does not touch requires_grad: a loss computed in eval mode still gives gamma "
                 "and beta (and every weight) gradients; freezing is requires_grad_(False)",
        "BDF": "one you left out is true: in eval mode BN uses the stored running statistics, so a sample's output no "
               "longer depends on its batch",
        "ADF": "one you left out is true: the running statistics change only in training mode; eval-mode forward "
               "passes leave them alone",
        "ABF": "one you left out is true: nn.Dropout checks self.training too: in eval mode it is the identity",
        "ABD": "one you left out is true: BatchNorm1d refuses a batch of one in training mode (no variance to "
               "compute); in eval mode it needs no batch statistics at all",
    }
    for letters, why in expected.items():
        assert_body(_fails("ch4_predict_eval", letters), f"you chose {letters}; {why}")


def test_running_update_and_merge_inputs_changed_in_place_are_named():
    def update_in_place(rm, rv, x, momentum, convention, training=True):
        new = running_update(rm, rv, x, momentum, convention, training)
        rm[...] = new[0]
        rv[...] = new[1]
        return rm, rv
    assert_body(_fails("ch4_running_update", update_in_place), in_place_message("running_mean, running_var"))

    def merge_in_place(counts, means, variances):
        out = merge_batch_stats(counts, means, variances)
        means -= out[0]
        return out
    assert_body(_fails("ch4_merge_stats", merge_in_place), in_place_message("means"))
