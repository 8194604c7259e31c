"""transmask.training.adaprune: post-training conversion to transposable N:M.

Acceptance (issue 6, b): on a dense MLP trained on scikit-learn's digits,
AdaPrune to transposable 2:4 (256 calibration images from the training split)
beats one-shot magnitude pruning on held-out accuracy and on every layer's
reconstruction error. Measured on seeds 0-4 (Adam, 300 steps/layer): dense
96.9-98.0 %, magnitude 2:4 88.9-95.6 %, AdaPrune 96.9-97.4 %.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

import transmask as tm  # noqa: E402
import transmask.training as tt  # noqa: E402
from transmask.training.adaprune import _fit_lstsq, _lstsq_design  # noqa: E402
from transmask.training.data import DigitsCNN, DigitsMLP, evaluate, load_digits_tensors, train  # noqa: E402

nn = torch.nn
F = torch.nn.functional

torch.set_num_threads(1)  # tiny models; extra threads only contend on a shared 2-core machine


@pytest.fixture(scope="module")
def digits():
    return load_digits_tensors(seed=0)


@pytest.fixture(scope="module")
def dense_mlp(digits):
    model = DigitsMLP(seed=0)
    train(model, digits.x_train, digits.y_train, epochs=15, seed=0)
    return model


@pytest.fixture(scope="module")
def magnitude(dense_mlp):
    return tt.magnitude_prune(dense_mlp, 2, 4, transposable=True, method="exact")


@pytest.fixture(scope="module")
def adam_result(dense_mlp, digits):
    return tt.adaprune(dense_mlp, digits.x_calib, 2, 4, transposable=True, method="exact", fit="adam",
                       steps=300, progress=False)


def test_adaprune_beats_magnitude_pruning(dense_mlp, magnitude, adam_result, digits):
    d = digits
    acc_dense = evaluate(dense_mlp, d.x_test, d.y_test)
    acc_mag = evaluate(magnitude, d.x_test, d.y_test)
    acc_ada = evaluate(adam_result.model, d.x_test, d.y_test)
    print(f"\ndigits MLP test accuracy: dense {acc_dense:.4f}, magnitude 2:4 {acc_mag:.4f}, AdaPrune 2:4 {acc_ada:.4f}")
    print(adam_result.summary())
    assert acc_ada > acc_mag  # (b) held-out accuracy
    assert acc_ada >= acc_dense - 0.02
    # (b) reconstruction error: on the calibration inputs the fit used ...
    for r in adam_result.layers:
        assert r.fit == "adam" and r.error_adaprune < 0.5 * r.error_magnitude
    # ... and on held-out data, with errors propagated through the pruned model and per layer in isolation
    for inputs in ("sparse", "dense"):
        e_mag = tt.layer_errors(dense_mlp, magnitude, d.x_test, inputs=inputs)
        e_ada = tt.layer_errors(dense_mlp, adam_result.model, d.x_test, inputs=inputs)
        assert list(e_mag) == list(e_ada) == ["layers.0", "layers.2", "layers.4"]
        assert all(e_ada[k] < e_mag[k] for k in e_mag), (inputs, e_mag, e_ada)


def test_adaprune_model_is_transposable_and_round_trips(dense_mlp, adam_result, digits):
    model = adam_result.model
    layers = tt.masked_layers(model)
    assert len(layers) == 3
    for name, layer in layers.items():
        assert layer.frozen
        assert tm.is_transposable(layer.mask_2d(), 2, 4, keep="exactly")
        assert (layer.weight[~layer.mask] == 0).all()
        # the mask is magnitude's (of the dense weights); only the kept values moved
        dense_w = dense_mlp.get_submodule(name).weight.detach().numpy()
        assert np.array_equal(layer.mask_2d(), tm.optimal_mask(dense_w, 2, 4, method="exact"))
    r0 = adam_result.layers[0]
    assert r0.view_shape == (256, 64) and 0.5 < r0.kept_l1_fraction < 1
    # state_dict into a fresh sparsified model
    fresh = DigitsMLP(seed=5)
    tt.sparsify(fresh, 2, 4)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh(digits.x_test), model(digits.x_test))
    # export to plain layers keeps the outputs
    assert torch.allclose(tt.export(model)(digits.x_test), model(digits.x_test), atol=1e-6)
    # the input model is untouched
    assert not tt.masked_layers(dense_mlp)


def test_lstsq_variant(dense_mlp, magnitude, adam_result, digits):
    d = digits
    res = tt.adaprune(dense_mlp, d.x_calib, 2, 4, fit="lstsq", progress=False)
    acc = evaluate(res.model, d.x_test, d.y_test)
    print(f"\nAdaPrune lstsq test accuracy {acc:.4f}")
    assert acc > evaluate(magnitude, d.x_test, d.y_test)
    # same mask, same inputs for the first layer (later layers see their predecessors' different fits)
    assert res.layers[0].error_magnitude == pytest.approx(adam_result.layers[0].error_magnitude, rel=1e-6)
    for r_ls, r_adam in zip(res.layers, adam_result.layers):
        assert r_ls.fit == "lstsq"
        # closed form (small ridge) is at least about as good as 300 Adam steps on the fitted data
        assert r_ls.error_adaprune <= 1.2 * r_adam.error_adaprune + 1e-4
    e_mag = tt.layer_errors(dense_mlp, magnitude, d.x_test)
    e_ls = tt.layer_errors(dense_mlp, res.model, d.x_test)
    assert all(e_ls[k] < e_mag[k] for k in e_mag)


def test_lstsq_is_rowwise_least_squares_on_kept_entries():
    torch.manual_seed(0)
    lin = nn.Linear(16, 8)
    layer = tt.MaskedLinear.from_dense(copy.deepcopy(lin), 2, 4, method="exact")
    layer.freeze()
    x = torch.randn(200, 16, dtype=torch.float32)
    y = (x @ torch.randn(16, 8) + 0.3).detach()
    _fit_lstsq(layer, _lstsq_design(layer, x, y), ridge=0.0, fit_bias=True)
    X = np.c_[x.double().numpy(), np.ones(len(x))]
    for i in range(8):
        keep = np.r_[layer.mask[i].numpy(), True]
        sol, *_ = np.linalg.lstsq(X[:, keep], y[:, i].double().numpy(), rcond=None)
        got = np.r_[layer.weight[i].detach().numpy()[keep[:-1]], layer.bias[i].item()]
        np.testing.assert_allclose(got, sol, rtol=1e-4, atol=1e-4)
    assert (layer.weight[~layer.mask] == 0).all()


def test_conv_lstsq_recovers_a_masked_conv_exactly():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1)
    target = copy.deepcopy(conv)
    layer = tt.MaskedConv2d.from_dense(conv, 4, 8, method="exact")
    layer.freeze()
    with torch.no_grad():  # a target that the masked layer can reproduce exactly
        target.weight.copy_(torch.randn_like(target.weight) * layer.mask)
    x = torch.randn(64, 8, 6, 6)
    with torch.no_grad():
        y = target(x)
    _fit_lstsq(layer, _lstsq_design(layer, x, y), ridge=0.0, fit_bias=True)
    assert torch.allclose(layer.weight, target.weight, atol=1e-4)
    assert torch.allclose(layer.bias, target.bias, atol=1e-4)


def test_reestimate_batchnorm_is_the_exact_average():
    torch.manual_seed(0)
    net = DigitsCNN(seed=0).eval()
    x = torch.rand(300, 1, 8, 8)
    bn = net.features[1]
    with torch.no_grad():
        h = net.features[0](x)
    assert tt.reestimate_batchnorm(net, x, batch_size=100) == 3
    assert not net.training and bn.momentum == 0.1
    assert torch.allclose(bn.running_mean, h.mean(dim=(0, 2, 3)), atol=1e-5)
    # running_var: average of the per-batch unbiased variances
    v = torch.stack([h[i:i + 100].var(dim=(0, 2, 3), unbiased=True) for i in range(0, 300, 100)]).mean(0)
    assert torch.allclose(bn.running_var, v, atol=1e-5)
    assert tt.reestimate_batchnorm(nn.Linear(2, 2), torch.rand(4, 2)) == 0


def test_adaprune_cnn_with_batchnorm_and_progress(capsys):
    torch.manual_seed(0)
    net = DigitsCNN(seed=0).eval()
    calib = [(torch.rand(32, 1, 8, 8), torch.zeros(32)) for _ in range(2)]  # a DataLoader-like iterable
    res = tt.adaprune(net, calib, 2, 4, skip_first=True, fit="lstsq", progress=True)
    assert [r.name for r in res.layers] == ["features.3", "features.7", "classifier"]
    assert all(r.fit == "lstsq" and r.error_adaprune <= r.error_magnitude for r in res.layers)
    assert res.bn_layers_reestimated == 3
    assert all(layer.is_valid() for layer in tt.masked_layers(res.model).values())
    assert "adaprune" in capsys.readouterr().err  # tqdm bar
    res2 = tt.adaprune(net, calib, 2, 4, skip_first=True, fit="adam", steps=20, batch_size=16, progress=False,
                       sequential=False, transposable=False)
    assert all(r.fit == "adam" and r.error_adaprune < r.error_magnitude for r in res2.layers)
    assert all(tm.is_nm(layer.mask_2d(), 2, 4, keep="at_most") for layer in tt.masked_layers(res2.model).values())
    assert "error_adaprune" in res2.summary()


def test_adaprune_from_unstructured_sparse_model(dense_mlp, digits):
    model = copy.deepcopy(dense_mlp)
    with torch.no_grad():  # 50 % unstructured magnitude pruning per layer
        for mod in model.modules():
            if isinstance(mod, nn.Linear):
                thr = mod.weight.abs().flatten().kthvalue(mod.weight.numel() // 2).values
                mod.weight.mul_(mod.weight.abs() > thr)
    res = tt.adaprune(model, digits.x_calib, 2, 4, fit="lstsq", progress=False)
    assert all(layer.is_valid() for layer in tt.masked_layers(res.model).values())
    assert evaluate(res.model, digits.x_test, digits.y_test) > 0.9


def test_bad_arguments(dense_mlp, digits):
    with pytest.raises(ValueError, match="fit"):
        tt.adaprune(dense_mlp, digits.x_calib, 2, 4, fit="sgd", progress=False)
    with pytest.raises(ValueError, match="empty"):
        tt.adaprune(dense_mlp, [], 2, 4, progress=False)
    with pytest.raises(ValueError, match="inputs"):
        tt.layer_errors(dense_mlp, dense_mlp, digits.x_calib, inputs="both")


# ---------------------------------------------------------------------------
# ill-posed fits (issue 12, item 8): never worse than magnitude pruning on held-out data
# ---------------------------------------------------------------------------

def _spectral(rows, cols, gen, decay=0.5):
    """A weight with singular values ~ k^-decay (as trained weights have) and random singular vectors."""
    U, _ = torch.linalg.qr(torch.randn(rows, rows, generator=gen))
    V, _ = torch.linalg.qr(torch.randn(cols, cols, generator=gen))
    k = min(rows, cols)
    W = (U[:, :k] * torch.arange(1, k + 1, dtype=torch.float32) ** -decay) @ V[:, :k].T
    return W * 0.05 / W.std()


@pytest.fixture(scope="module")
def ffn_case():
    """A transformer FFN (d -> 4d -> d, GELU) scaled down from 384 -> 1536 -> 384, with 96 random
    calibration inputs: the second layer keeps 128 (+ bias) weights per output row, more unknowns
    than samples, as 512 inputs for 768 kept weights in the full-size case."""
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 64))
    with torch.no_grad():
        model[0].weight.copy_(_spectral(256, 64, gen))
        model[2].weight.copy_(_spectral(64, 256, gen))
        model[0].bias.normal_(0, 0.02, generator=gen)
        model[2].bias.normal_(0, 0.02, generator=gen)
    data = torch.Generator().manual_seed(1)
    x_test = torch.randn(4096, 64, generator=data)
    calib = torch.randn(96, 64, generator=data)
    return model.eval(), calib, x_test, tt.magnitude_prune(model, 2, 4)


def _output_error(model, ref, x):
    with torch.no_grad():
        y, yr = model(x), ref(x)
    return float(((y - yr) ** 2).sum() / (yr ** 2).sum())


def test_underdetermined_lstsq_fit_is_worse_than_magnitude_without_the_guard(ffn_case):
    """The failure as reported: a least-squares re-fit with a tiny ridge on fewer samples than
    unknowns fits the calibration data and predicts new inputs worse than magnitude pruning."""
    model, calib, x_test, mag = ffn_case
    old = copy.deepcopy(mag)
    with torch.no_grad():
        for i, x in ((0, calib), (2, model[1](model[0](calib)))):
            _fit_lstsq(old[i], _lstsq_design(old[i], x, model[i](x)), ridge=1e-4, fit_bias=True)
    e_mag, e_old = _output_error(mag, model, x_test), _output_error(old, model, x_test)
    print(f"\nFFN 64->256->64, 2:4-T, 96 calibration inputs: magnitude {e_mag:.3f}, tiny-ridge lstsq {e_old:.3f}")
    assert e_old > 1.2 * e_mag


@pytest.mark.parametrize("fit,kw", [("lstsq", {}), ("adam", {"steps": 300, "lr": 1e-2})])
def test_ill_posed_fit_is_never_worse_than_magnitude(ffn_case, fit, kw):
    model, calib, x_test, mag = ffn_case
    e_mag = _output_error(mag, model, x_test)
    with pytest.warns(UserWarning, match="ill-posed"):
        unchecked = tt.adaprune(model, calib, 2, 4, fit=fit, holdout=0, progress=False, **kw)
    if fit == "adam":  # without the held-out check Adam overfits: worse than magnitude pruning on new inputs ...
        assert _output_error(unchecked.model, model, x_test) > e_mag
    else:  # ... while lstsq without it falls back to SparseGPT's damping, 0.01 x mean diag(X^T X)
        assert [r.damping for r in unchecked.layers] == [1e-4, 0.01]
    # ... with it (the default), each layer keeps the better of fitted and unfitted on held-out samples
    with pytest.warns(UserWarning, match=r"layer '2': the \w+ fit is ill-posed \(77 calibration rows for 129"):
        res = tt.adaprune(model, calib, 2, 4, fit=fit, progress=False, **kw)
    e_res = _output_error(res.model, model, x_test)
    print(f"\n{fit}: magnitude {e_mag:.3f}, unchecked {_output_error(unchecked.model, model, x_test):.3f}, "
          f"checked {e_res:.3f}\n{res.summary()}")
    assert e_res < 0.8 * e_mag
    by = {r.name: r for r in res.layers}
    assert by["2"].ill_posed and by["2"].samples == 77 and by["2"].unknowns_per_row == 129
    assert not by["0"].ill_posed and by["0"].unknowns_per_row == 33
    for r in res.layers:
        assert r.fit == fit and r.choice in ("fitted", "magnitude")
        kept = r.heldout_error_magnitude if r.choice == "magnitude" else r.heldout_error_fitted
        assert kept <= r.heldout_error_magnitude
        assert (r.choice == "magnitude") == (r.heldout_error_fitted >= r.heldout_error_magnitude)
        if r.choice == "magnitude":  # the magnitude-pruned weights are kept as they were
            assert torch.equal(res.model.get_submodule(r.name).weight, mag.get_submodule(r.name).weight)
            assert r.error_adaprune == pytest.approx(r.error_magnitude, rel=1e-9)
    # layer 0 sees white inputs, for which the magnitude-pruned weights are already the best in
    # expectation: any fit on 77 samples only adds noise, and the check keeps magnitude
    assert by["0"].choice == "magnitude"
    assert by["2"].choice == "fitted" and by["2"].heldout_error_fitted < 0.8 * by["2"].heldout_error_magnitude
    if fit == "lstsq":
        assert by["2"].damping in (1e-4, 0.01, 0.1, 1.0)


def test_holdout_argument(ffn_case):
    model, calib, _, _ = ffn_case
    with pytest.raises(ValueError, match="holdout"):
        tt.adaprune(model, calib, 2, 4, holdout=1.0, progress=False)
    with pytest.raises(ValueError, match="no calibration sample"):
        tt.adaprune(model, calib[:1], 2, 4, fit="lstsq", progress=False)
