"""cyclad.torch: the nn.Module adapter, and the module's place in the package (it needs torch,
cyclad.models does not import it, and its name does not shadow the real torch)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import cyclad.aggregators as agg
import cyclad.torch as ctorch
from cyclad import _validation, models


def test_torch_adapter_roundtrip_and_grad() -> None:
    torch.manual_seed(0)
    module = torch.nn.Linear(4, 3)
    ad = ctorch.TorchAdapter(module)
    assert ad.n_params == 15
    theta = np.arange(15, dtype=np.float64) / 10
    ad.set_flat(theta)
    np.testing.assert_allclose(ad.get_flat(), theta, rtol=1e-6)
    X = torch.randn(6, 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2])

    def loss_fn(m, X, y):
        return torch.nn.functional.cross_entropy(m(X), y)

    loss, g = ad.loss_and_grad(theta, loss_fn, X, y)
    # the same model in NumPy: torch's Linear stores W as (out, in); ours is (in, out)
    ours = models.get("softmax", 4, 3)
    W = theta[:12].reshape(3, 4).T
    th = np.concatenate([W.ravel(), theta[12:]])
    Xn, yn = X.double().numpy(), y.numpy()
    assert loss == pytest.approx(ours.loss(th, Xn, yn), rel=1e-5)
    gn = ours.grad(th, Xn, yn)
    np.testing.assert_allclose(g[:12].reshape(3, 4).T.ravel(), gn[:12], rtol=1e-4, atol=1e-6)


def test_torch_adapter_shape_error_names_theta() -> None:
    ad = ctorch.TorchAdapter(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"theta must have shape \(6,\)") as info:
        ad.set_flat(np.zeros(3))
    assert isinstance(info.value, _validation.ArgumentError)
    assert info.value.argument == "theta"


def test_torch_adapter_skips_frozen_parameters_and_missing_grads() -> None:
    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    module[0].weight.requires_grad_(False)
    ad = ctorch.TorchAdapter(module)
    assert ad.n_params == 2 + 2 + 1  # bias of layer 0, weight and bias of layer 1
    np.testing.assert_array_equal(ad.flat_grad(), np.zeros(5))  # no backward pass yet
    frozen = module[0].weight.detach().clone()
    ad.set_flat(np.ones(5))
    assert torch.equal(module[0].weight, frozen)
    np.testing.assert_array_equal(ad.get_flat(), np.ones(5))


def test_torch_adapter_of_module_without_parameters() -> None:
    ad = ctorch.TorchAdapter(torch.nn.ReLU())
    assert ad.n_params == 0
    assert ad.get_flat().shape == (0,)
    assert ad.flat_grad().shape == (0,)


def test_name_does_not_shadow_the_real_torch() -> None:
    # cyclad.torch's own `torch` and the one the dtype policy imports are PyTorch itself.
    assert ctorch.torch is sys.modules["torch"]
    assert sys.modules["torch"].__file__ != ctorch.__file__
    assert hasattr(ctorch.torch, "nn")
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    out = agg.mean(t)
    assert isinstance(out, torch.Tensor)
    assert out.tolist() == [1.5, 2.5, 3.5]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )


def test_models_does_not_import_torch() -> None:
    res = _python(
        "import sys, cyclad.models, cyclad.train\n"
        "print('cyclad.torch' in sys.modules, 'torch' in sys.modules)\n"
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["False", "False"]


def test_without_torch_the_import_error_names_the_extra() -> None:
    res = _python(
        "import sys\n"
        "sys.modules['torch'] = None  # what an environment without PyTorch looks like\n"
        "import cyclad.models\n"
        "try:\n"
        "    import cyclad.torch\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    assert res.returncode == 0, res.stderr
    assert "cyclad.torch needs PyTorch" in res.stdout
    assert "pip install 'cyclad[torch]'" in res.stdout
