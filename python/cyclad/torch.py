"""PyTorch entry points (the optional ``torch`` extra: ``pip install "cyclad[torch]"``).

- :func:`flatten_grads`, :func:`flatten_params` and :func:`unflatten_grads_`,
  :func:`unflatten_params_`: a module's gradients or parameters as one contiguous vector.
  The order is fixed: the parameters that require a gradient, in ``module.parameters()`` order
  (shared parameters once), each flattened in row-major order. :func:`flat_storage_` moves
  them into one buffer, after which the flatten functions return views (no copy).
- :class:`RobustAggregator`: any cyclad rule (``"nnm+trimmed_mean"``) over n workers' flat
  gradients in a hand-written data-parallel loop; tensor in, tensor out.
- :func:`robust_hook` / :func:`register_robust_hook`: a DDP communication hook that replaces
  the all-reduce mean of every gradient bucket with a robust rule over the workers' buckets.
- :class:`TorchModel`: any ``nn.Module`` with a loss as a cyclad model, so that
  :func:`cyclad.train.run` trains it with LAD / Com-LAD (``Config(model=TorchModel(...))``).
- :class:`TorchAdapter`: the parameters as one float64 NumPy vector (get, set, gradient).

Tensors must be on the CPU (the kernels run there); a tensor on another device raises a
``ValueError`` naming it.

This module imports torch when it is imported; without torch it raises ``ImportError`` naming
the extra. (Its name does not shadow torch: every import in cyclad is absolute, so ``import
torch`` here and elsewhere in the package is the real PyTorch.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    msg = f"cyclad.torch needs PyTorch ({exc}): pip install 'cyclad[torch]'"
    raise ImportError(msg) from exc

from cyclad import aggregators
from cyclad._validation import ArgumentError, ArgumentTypeError

__all__ = [
    "RobustAggregator",
    "TorchAdapter",
    "TorchModel",
    "flat_storage_",
    "flatten_grads",
    "flatten_params",
    "register_robust_hook",
    "robust_hook",
    "unflatten_grads_",
    "unflatten_params_",
]

Array = NDArray[np.float64]


class TorchAdapter:
    """A ``torch.nn.Module`` seen as a flat parameter vector.

    Parameters
    ----------
    module : torch.nn.Module
        Its parameters that require a gradient, in ``module.parameters()`` order, make up the
        flat vector.

    Attributes
    ----------
    module : torch.nn.Module
    params : list of torch.nn.Parameter
        The parameters in the flat vector, in order.
    n_params : int
        Length of the flat vector.

    Examples
    --------
    >>> ad = TorchAdapter(torch.nn.Linear(4, 2))
    >>> ad.n_params
    10
    >>> ad.set_flat(ad.get_flat() * 0)
    """

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.n_params = int(sum(p.numel() for p in self.params))

    def get_flat(self) -> Array:
        """The parameters as one float64 NumPy vector (a copy)."""
        if not self.params:
            return np.zeros(0)
        return np.concatenate([p.detach().cpu().double().reshape(-1).numpy() for p in self.params])

    def set_flat(self, theta: Any) -> None:
        """Copy ``theta`` (shape ``(n_params,)``) into the module's parameters.

        Raises
        ------
        cyclad.ArgumentError
            (a ``ValueError``) If ``theta`` does not have shape ``(n_params,)``;
            ``.argument == "theta"``.
        """
        theta = np.asarray(theta)
        if theta.shape != (self.n_params,):
            msg = f"theta must have shape ({self.n_params},), got {theta.shape}"
            raise ArgumentError(msg, argument="theta")
        off = 0
        with torch.no_grad():
            for p in self.params:
                k = p.numel()
                p.copy_(torch.from_numpy(np.ascontiguousarray(theta[off : off + k])).view_as(p))
                off += k

    def flat_grad(self) -> Array:
        """The parameters' ``.grad`` as one float64 vector (zeros where ``.grad`` is None)."""
        parts = [np.zeros(0)]
        for p in self.params:
            g = p.grad
            parts.append(
                np.zeros(p.numel()) if g is None else g.detach().cpu().double().reshape(-1).numpy()
            )
        return np.concatenate(parts)

    def loss_and_grad(
        self, theta: Any, loss_fn: Callable[..., torch.Tensor], *args: Any
    ) -> tuple[float, Array]:
        """Set ``theta``, evaluate ``loss_fn(module, *args)`` (a scalar tensor), backpropagate,
        and return ``(loss, flat gradient)``."""
        self.set_flat(theta)
        self.module.zero_grad(set_to_none=True)
        loss = loss_fn(self.module, *args)
        torch.autograd.backward(loss)
        return float(loss.detach()), self.flat_grad()


# --------------------------------------------------------------------------------------------
# flat vectors
# --------------------------------------------------------------------------------------------


def _trainable(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def _cpu(t: torch.Tensor, name: str) -> None:
    if t.device.type != "cpu":
        msg = f"{name} must be on the CPU (cyclad's kernels run there), got device {t.device}"
        raise ArgumentError(msg, argument=name)


def _as_view(tensors: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """The flat vector as a view, when the tensors lie back to back in one storage."""
    if not tensors:
        return None
    first = tensors[0]
    if not all(t.is_contiguous() and t.dtype == first.dtype for t in tensors):
        return None
    base = first.untyped_storage().data_ptr()
    if any(t.untyped_storage().data_ptr() != base for t in tensors):
        return None
    off = first.storage_offset()
    for t in tensors:
        if t.storage_offset() != off:
            return None
        off += t.numel()
    return first.detach().as_strided((off - first.storage_offset(),), (1,), first.storage_offset())


def _flatten(tensors: Sequence[torch.Tensor], empty_dtype: torch.dtype) -> torch.Tensor:
    view = _as_view(tensors)
    if view is not None:
        return view
    if not tensors:
        return torch.zeros(0, dtype=empty_dtype)
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def flatten_params(module: torch.nn.Module) -> torch.Tensor:
    """The trainable parameters as one vector (a view after :func:`flat_storage_`, else a
    copy), in the module's documented order."""
    params = _trainable(module)
    for p in params:
        _cpu(p, "module")
    return _flatten(params, torch.float32)


def flatten_grads(module: torch.nn.Module) -> torch.Tensor:
    """The trainable parameters' ``.grad`` as one vector (zeros where ``.grad`` is None); a
    view when the gradients lie back to back in one buffer (:func:`flat_storage_`)."""
    params = _trainable(module)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    for g in grads:
        _cpu(g, "module")
    return _flatten(grads, params[0].dtype if params else torch.float32)


def _check_vector(module: torch.nn.Module, vector: Any, name: str) -> torch.Tensor:
    params = _trainable(module)
    n = sum(p.numel() for p in params)
    v = vector if isinstance(vector, torch.Tensor) else torch.as_tensor(np.asarray(vector))
    _cpu(v, name)
    if v.shape != (n,):
        msg = f"{name} must have shape ({n},) for this module, got {tuple(v.shape)}"
        raise ArgumentError(msg, argument=name)
    return v


def unflatten_params_(module: torch.nn.Module, vector: Any) -> None:
    """Copy ``vector`` (shape ``(n_params,)``) into the trainable parameters, in place."""
    v = _check_vector(module, vector, "vector")
    off = 0
    with torch.no_grad():
        for p in _trainable(module):
            k = p.numel()
            p.copy_(v[off : off + k].view_as(p))
            off += k


def unflatten_grads_(module: torch.nn.Module, vector: Any) -> None:
    """Copy ``vector`` into the trainable parameters' ``.grad`` (allocated where None)."""
    v = _check_vector(module, vector, "vector")
    off = 0
    for p in _trainable(module):
        k = p.numel()
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad.copy_(v[off : off + k].view_as(p))
        off += k


def flat_storage_(module: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the trainable parameters and their gradients into one flat buffer each, in place.

    Afterwards :func:`flatten_params` and :func:`flatten_grads` return views (no copy), and a
    backward pass accumulates into the gradient buffer. Returns ``(params, grads)``, the two
    buffers. Optimisers built before the call keep the old tensors: build them after it.
    """
    params = _trainable(module)
    for p in params:
        _cpu(p, "module")
    dtypes = {p.dtype for p in params}
    if len(dtypes) > 1:
        msg = f"module parameters must share one dtype for a flat buffer, got {sorted(map(str, dtypes))}"
        raise ArgumentTypeError(msg, argument="module")
    dtype = params[0].dtype if params else torch.float32
    n = sum(p.numel() for p in params)
    flat = torch.zeros(n, dtype=dtype)
    grad = torch.zeros(n, dtype=dtype)
    off = 0
    with torch.no_grad():
        for p in params:
            k = p.numel()
            flat[off : off + k].copy_(p.reshape(-1))
            g_old = p.grad
            p.data = flat[off : off + k].view_as(p)
            p.grad = grad[off : off + k].view_as(p)
            if g_old is not None:
                p.grad.copy_(g_old)
            off += k
    return flat, grad


# --------------------------------------------------------------------------------------------
# robust aggregation of workers' gradients
# --------------------------------------------------------------------------------------------


class RobustAggregator:
    """A cyclad rule over n workers' flat gradients, for a hand-written data-parallel loop.

    Parameters
    ----------
    rule : str
        A registry name (:func:`cyclad.aggregators.get`): ``"trimmed_mean"``, ``"krum"``,
        ``"nnm+trimmed_mean"``, ``"bucketing+geometric_median"``, ...
    f : int, optional
        The number of Byzantine workers the rule tolerates (for rules that take ``f``).
    threads : int, optional
        Kernel threads (None = all cores).
    **params
        Other rule parameters (``tau``, ``s``, ``seed``, ``m``, ...).

    Examples
    --------
    >>> agg = RobustAggregator("nnm+trimmed_mean", f=2)
    >>> g = agg([flatten_grads(m) for m in replicas])    # list of (P,) tensors, or (n, P)
    >>> unflatten_grads_(model, g); optimizer.step()
    """

    def __init__(
        self, rule: str, f: int | None = None, *, threads: int | None = None, **params: Any
    ) -> None:
        if f is not None:
            params["f"] = f
        self.rule = rule
        self.params = dict(params)
        self._fn = aggregators.get(rule, threads=threads, **params)

    def __call__(self, grads: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """The aggregate, shape ``(P,)``, with the input's dtype (CPU tensors)."""
        out = self._fn(grads)
        if not isinstance(out, torch.Tensor):
            out = torch.from_numpy(np.asarray(out))
        return out

    def __repr__(self) -> str:
        kw = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"RobustAggregator({self.rule!r}{', ' if kw else ''}{kw})"


def robust_hook(
    rule: str, f: int | None = None, *, threads: int | None = None, **params: Any
) -> Callable[[Any, Any], Any]:
    """A DDP communication hook: every gradient bucket is all-gathered from the workers and
    replaced by the cyclad rule over them (instead of the all-reduce mean).

    Every worker computes the rule on the same gathered buckets, and the kernels give
    bit-identical results on every machine and thread count, so the honest workers agree
    without a broadcast. Limits: the rule sees one bucket at a time (a distance-based rule
    such as Krum ranks workers per bucket, not per model; set ``bucket_cap_mb`` above the model
    size for one bucket), it moves ``world_size`` buckets to every worker where a ring
    all-reduce moves about two, and it needs a backend with ``all_gather`` on CPU tensors
    (gloo).

    Use ``ddp_model.register_comm_hook(None, robust_hook("trimmed_mean", f=1))``, or
    :func:`register_robust_hook`.
    """
    import torch.distributed as dist

    agg = RobustAggregator(rule, f, threads=threads, **params)

    def hook(state: Any, bucket: Any) -> Any:
        group = state if state is not None else dist.group.WORLD
        world = dist.get_world_size(group)
        buf = bucket.buffer()
        parts = [torch.empty_like(buf) for _ in range(world)]
        work = dist.all_gather(parts, buf, group=group, async_op=True)

        def finish(fut: Any) -> torch.Tensor:
            fut.wait()
            out = agg(torch.stack(parts))
            buf.copy_(out)
            result: torch.Tensor = buf
            return result

        return work.get_future().then(finish)

    # DDP inspects the hook's annotations and wants the objects themselves, not the strings
    # that postponed evaluation leaves
    hook.__annotations__ = {
        "state": object,
        "bucket": dist.GradBucket,  # type: ignore[attr-defined]
        "return": torch.futures.Future[torch.Tensor],
    }
    return hook


def register_robust_hook(
    ddp_model: Any,
    rule: str,
    f: int | None = None,
    *,
    process_group: Any = None,
    threads: int | None = None,
    **params: Any,
) -> None:
    """``ddp_model.register_comm_hook(process_group, robust_hook(rule, f, ...))``."""
    ddp_model.register_comm_hook(process_group, robust_hook(rule, f, threads=threads, **params))


# --------------------------------------------------------------------------------------------
# an nn.Module as a cyclad model (LAD / Com-LAD with train.run)
# --------------------------------------------------------------------------------------------


class TorchModel:
    """An ``nn.Module`` and a loss as a cyclad model: ``train.Config(model=TorchModel(...))``.

    The flat parameter vector is :func:`flatten_params`'s, in the module's dtype (float32 or
    float64; set ``Config.dtype`` to match). Each subset gradient comes from its own forward and
    backward pass, written straight into the output array: no float64 copy of a float32 model.

    Parameters
    ----------
    module : torch.nn.Module
        Maps a batch of features (a tensor view of the NumPy rows) to outputs.
    loss : str or callable
        ``"cross_entropy"`` (outputs are class logits, labels are class indices),
        ``"mse"``, or ``loss(outputs, labels) -> scalar tensor`` (a mean over the batch).
    """

    def __init__(
        self,
        module: torch.nn.Module,
        loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "cross_entropy",
    ) -> None:
        self.module = module
        self.params = _trainable(module)
        for p in self.params:
            _cpu(p, "module")
        dtypes = {p.dtype for p in self.params}
        if len(dtypes) != 1 or next(iter(dtypes)) not in (torch.float32, torch.float64):
            msg = f"module parameters must all be float32 or all float64, got {sorted(map(str, dtypes))}"
            raise ArgumentTypeError(msg, argument="module")
        self.torch_dtype = next(iter(dtypes))
        self.dtype = np.dtype(np.float32 if self.torch_dtype == torch.float32 else np.float64)
        self.n_params = int(sum(p.numel() for p in self.params))
        if loss == "cross_entropy":
            self.loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = (
                torch.nn.functional.cross_entropy
            )
        elif loss == "mse":

            def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                return torch.nn.functional.mse_loss(out.reshape(-1), y.to(out.dtype))

            self.loss_fn = mse
        elif callable(loss):
            self.loss_fn = loss
        else:
            msg = f"loss must be 'cross_entropy', 'mse' or a callable, got {loss!r}"
            raise ArgumentError(msg, argument="loss")
        self.name = type(module).__name__
        self._init = flatten_params(module).clone()

    def _set(self, theta: Any) -> None:
        t = torch.from_numpy(np.ascontiguousarray(theta, dtype=self.dtype))
        unflatten_params_(self.module, t)

    def _labels(self, y: Any) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(y))

    def init(self, seed: int = 0, dtype: Any = None) -> NDArray[Any]:
        """The module's parameters when this model was built (``seed`` is not used: seed torch
        before building the module). ``dtype`` must be the module's."""
        if dtype is not None and np.dtype(dtype) != self.dtype:
            msg = f"dtype {np.dtype(dtype)} does not match the module's {self.dtype}; set Config.dtype"
            raise ArgumentTypeError(msg, argument="dtype")
        return np.array(self._init.numpy(), dtype=self.dtype, copy=True)

    def subset_grads(self, theta: Any, X: Any, y: Any, subsets: Sequence[Any]) -> NDArray[Any]:
        """Row ``j``: the gradient of the mean loss over ``X[subsets[j]]`` at ``theta``."""
        self._set(theta)
        out = np.empty((len(subsets), self.n_params), dtype=self.dtype)
        for j, s in enumerate(subsets):
            Xj = torch.from_numpy(np.ascontiguousarray(X[s], dtype=self.dtype))
            self.module.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.module(Xj), self._labels(y[s]))
            torch.autograd.backward(loss)
            row = torch.from_numpy(out[j])
            off = 0
            for p in self.params:
                k = p.numel()
                if p.grad is None:
                    row[off : off + k].zero_()
                else:
                    row[off : off + k].copy_(p.grad.reshape(-1))
                off += k
        return out

    def loss(self, theta: Any, X: Any, y: Any) -> float:
        """The mean loss over ``(X, y)``."""
        self._set(theta)
        with torch.no_grad():
            Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=self.dtype))
            return float(self.loss_fn(self.module(Xt), self._labels(y)))

    def accuracy(self, theta: Any, X: Any, y: Any) -> float:
        """Fraction of samples whose largest output is the label (0 for non-finite theta)."""
        if not np.all(np.isfinite(theta)):
            return 0.0
        self._set(theta)
        with torch.no_grad():
            Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=self.dtype))
            pred = self.module(Xt).argmax(dim=1).numpy()
        return float(np.mean(pred == np.asarray(y)))

    def __repr__(self) -> str:
        return f"TorchModel({self.name}, n_params={self.n_params})"
