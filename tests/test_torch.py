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


# --------------------------------------------------------------------------------------------
# flat vectors
# --------------------------------------------------------------------------------------------


def _net() -> torch.nn.Module:
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))


def test_flatten_order_is_parameters_order() -> None:
    m = _net()
    flat = ctorch.flatten_params(m)
    want = torch.cat([p.detach().reshape(-1) for p in m.parameters()])
    assert torch.equal(flat, want)
    assert flat.shape == (4 * 3 + 3 + 3 * 2 + 2,)
    ctorch.unflatten_params_(m, torch.arange(flat.numel(), dtype=torch.float32))
    assert m[0].weight[1, 0].item() == 4.0  # row-major within each parameter
    assert m[2].bias[1].item() == flat.numel() - 1


def test_flatten_grads_zeros_for_missing_and_roundtrip() -> None:
    m = _net()
    g = ctorch.flatten_grads(m)
    assert torch.equal(g, torch.zeros(23))
    m(torch.randn(5, 4)).sum().backward()
    g = ctorch.flatten_grads(m)
    assert torch.equal(g, torch.cat([p.grad.reshape(-1) for p in m.parameters()]))
    ctorch.unflatten_grads_(m, g * 2)
    assert torch.equal(ctorch.flatten_grads(m), g * 2)


def test_flat_storage_gives_views_and_backward_accumulates_into_it() -> None:
    m = _net()
    before = ctorch.flatten_params(m).clone()
    params, grads = ctorch.flat_storage_(m)
    assert torch.equal(params, before)
    view = ctorch.flatten_params(m)
    assert view.data_ptr() == params.data_ptr()  # no copy
    m(torch.randn(5, 4)).sum().backward()
    g = ctorch.flatten_grads(m)
    assert g.data_ptr() == grads.data_ptr()
    assert torch.count_nonzero(grads) > 0
    with torch.no_grad():
        params.zero_()
    assert all(torch.count_nonzero(p) == 0 for p in m.parameters())


def test_flatten_errors_name_the_argument() -> None:
    m = _net()
    with pytest.raises(ValueError, match=r"vector must have shape \(23,\)") as info:
        ctorch.unflatten_params_(m, torch.zeros(5))
    assert info.value.argument == "vector"
    m.half()
    m[0].weight.data = m[0].weight.data.float()
    with pytest.raises(TypeError, match="share one dtype"):
        ctorch.flat_storage_(m)


# --------------------------------------------------------------------------------------------
# aggregators on lists of tensors, RobustAggregator
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "rule", ["mean", "median", "trimmed_mean", "krum", "nnm+trimmed_mean", "geometric_median"]
)
def test_every_rule_takes_a_list_of_tensors(rule, dtype) -> None:
    g = torch.Generator().manual_seed(1)
    rows = [torch.randn(7, generator=g, dtype=dtype) for _ in range(6)]
    kw = {"f": 1} if rule in ("trimmed_mean", "krum", "nnm+trimmed_mean") else {}
    fn = agg.get(rule, **kw)
    out = fn(rows)
    assert isinstance(out, torch.Tensor)
    assert out.dtype == dtype
    want = fn(np.stack([r.numpy() for r in rows]))
    np.testing.assert_array_equal(out.numpy(), want)
    assert torch.equal(fn(tuple(rows)), out)
    assert torch.equal(ctorch.RobustAggregator(rule, **kw)(rows), out)
    assert torch.equal(ctorch.RobustAggregator(rule, **kw)(torch.stack(rows)), out)


def test_lists_of_tensors_are_checked() -> None:
    with pytest.raises(ValueError, match=r"X\[1\] must be 1-D"):
        agg.mean([torch.zeros(3), torch.zeros(1, 3)])
    with pytest.raises(TypeError, match="one dtype"):
        agg.mean([torch.zeros(3), torch.zeros(3, dtype=torch.float64)])
    meta = torch.zeros(3, device="meta")
    with pytest.raises(ValueError, match=r"X\[1\] must be a CPU tensor, got device meta"):
        agg.mean([torch.zeros(3), meta])
    with pytest.raises(ValueError, match="must be a CPU tensor, got device meta"):
        agg.median(torch.zeros(2, 3, device="meta"))


# --------------------------------------------------------------------------------------------
# TorchModel: an nn.Module trained by train.run
# --------------------------------------------------------------------------------------------


def test_torch_model_trains_with_lad_in_float32() -> None:
    from cyclad import train

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.Tanh(), torch.nn.Linear(16, 10))
    model = ctorch.TorchModel(net)
    cfg = train.Config(
        model=model,
        dtype="float32",
        rounds=15,
        n_devices=8,
        n_byzantine=2,
        d=3,
        lr=0.5,
        attack="alie",
        blas_threads=1,
    )
    hist = train.run(cfg)
    assert hist.theta is not None
    assert hist.theta.dtype == np.float32
    assert hist.final_loss < hist.loss[0]
    assert hist.final_accuracy > 0.6
    with pytest.raises(train.ConfigError, match="set dtype = 'float32'"):
        train.Config(model=model).validate()


def test_torch_model_gradients_match_autograd_on_each_subset() -> None:
    torch.manual_seed(1)
    net = torch.nn.Linear(5, 3).double()
    model = ctorch.TorchModel(net)
    X = np.random.default_rng(0).standard_normal((12, 5))
    y = np.arange(12) % 3
    theta = model.init(dtype=np.float64)
    G = model.subset_grads(theta, X, y, [slice(0, 4), np.array([5, 7, 11])])
    for row, sel in zip(G, [slice(0, 4), np.array([5, 7, 11])], strict=True):
        net.zero_grad()
        torch.nn.functional.cross_entropy(
            net(torch.from_numpy(X[sel])), torch.from_numpy(y[sel])
        ).backward()
        np.testing.assert_array_equal(row, ctorch.flatten_grads(net).numpy())


# --------------------------------------------------------------------------------------------
# the DDP communication hook on a real gloo group
# --------------------------------------------------------------------------------------------


def _ddp_worker(rank: int, world: int, port: int, rule: str, f: int, q) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
        ref = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
        ref.load_state_dict(net.state_dict())
        ddp = torch.nn.parallel.DistributedDataParallel(net, bucket_cap_mb=64)
        ctorch.register_robust_hook(ddp, rule, f)
        g = torch.Generator().manual_seed(100 + rank)
        X = torch.randn(10, 6, generator=g) * (50.0 if rank == world - 1 else 1.0)
        y = torch.randint(0, 3, (10,), generator=g)
        torch.nn.functional.cross_entropy(ddp(X), y).backward()
        got = ctorch.flatten_grads(net)
        # by hand: every worker's own gradient, gathered, the rule applied once
        torch.nn.functional.cross_entropy(ref(X), y).backward()
        mine = ctorch.flatten_grads(ref)
        rows = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(rows, mine)
        want = agg.get(rule, f=f)(rows)
        q.put((rank, bool(torch.equal(got, want)), float((got - want).abs().max())))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(("rule", "world"), [("trimmed_mean", 3), ("krum", 4)])
def test_ddp_robust_hook_equals_the_rule_applied_by_hand(rule, world) -> None:
    import torch.multiprocessing as mp

    from cyclad.distributed import _free_port

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = _free_port()
    f = 1 if rule == "trimmed_mean" else 0
    procs = [
        ctx.Process(target=_ddp_worker, args=(r, world, port, rule, f, q)) for r in range(world)
    ]
    for p in procs:
        p.start()
    try:
        results = sorted(q.get(timeout=120) for _ in range(world))
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert [r for r, _, _ in results] == list(range(world))
    assert all(ok for _, ok, _ in results), results


def test_the_digits_example_runs_and_the_robust_rule_wins() -> None:
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "examples" / "torch_digits.py"
    res = subprocess.run(
        [sys.executable, str(script), "--steps", "120"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    acc = {
        line.split(":")[0].strip(): float(line.rsplit(" ", 1)[1])
        for line in res.stdout.splitlines()
        if "test accuracy" in line
    }
    assert acc["mean"] < 0.3
    assert acc["nnm+trimmed_mean"] > 0.8
