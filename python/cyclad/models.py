"""Small NumPy models with analytic gradients on a flat parameter vector.

Every model exposes ``n_params``, ``init(seed)``, ``loss(theta, X, y)`` (mean over samples),
``grad(theta, X, y)``, ``predict(theta, X)``, ``accuracy(theta, X, y)`` and the fast
``subset_grads(theta, X, y, subsets) -> (N, P)`` that LAD needs: one forward/backward pass over the
union of the subsets' samples, then one small matrix product per layer and subset (no Python loop
over samples).

Parameter layout: for each layer ``W`` (``in x out``, row-major) then its bias ``b`` (``out``).

=================  =============================================  ==================
name               model                                          loss
=================  =============================================  ==================
``logistic``       binary linear classifier (labels 0/1)          logistic loss
``softmax``        multiclass linear classifier                   cross-entropy
``least_squares``  linear regression on one-hot targets           ``0.5 ||.||^2``
``mlp``            one hidden layer (``tanh`` or ``relu``)        cross-entropy
=================  =============================================  ==================

For a PyTorch model of one's own, :class:`cyclad.torch.TorchAdapter` (the ``torch`` extra) views
a ``torch.nn.Module``'s parameters as one flat vector in the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "MLP",
    "MODELS",
    "LeastSquares",
    "Logistic",
    "Model",
    "ModelLike",
    "Softmax",
    "get",
]

MODELS = ("logistic", "softmax", "least_squares", "mlp")

Array = NDArray[Any]
Subsets = Sequence[Any]  # index arrays or slices


def _softmax(z: Array) -> Array:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def _logsumexp(z: Array) -> Array:
    m = z.max(axis=1, keepdims=True)
    return np.asarray((m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0])


def _onehot(y: Array, c: int, dtype: Any) -> Array:
    out = np.zeros((y.shape[0], c), dtype=dtype)
    out[np.arange(y.shape[0]), y] = 1
    return out


@runtime_checkable
class ModelLike(Protocol):
    """What training needs of a model (:class:`Model` here, or :class:`cyclad.torch.TorchModel`):
    a flat parameter vector of ``n_params`` values, its initial value, per-subset gradients,
    the mean loss and the test accuracy."""

    n_params: int

    def init(self, seed: int = 0, dtype: Any = ...) -> Any: ...

    def subset_grads(self, theta: Any, X: Any, y: Any, subsets: Any) -> Any: ...

    def loss(self, theta: Any, X: Any, y: Any) -> float: ...

    def accuracy(self, theta: Any, X: Any, y: Any) -> float: ...


class Model:
    """Base class: a model with layers ``(in_i, out_i)`` and a flat parameter vector.

    Subclasses implement ``_forward_backward(theta, X, y, need_grad)`` returning the mean loss
    and, per layer, the layer input ``(m, in)`` and the per-sample output deltas ``(m, out)``
    (derivative of each sample's loss with respect to the layer's pre-activation output).
    """

    name = "model"

    def __init__(self, layers: Sequence[tuple[int, int]]) -> None:
        self.layers = [(int(a), int(b)) for a, b in layers]
        self.n_params = sum(a * b + b for a, b in self.layers)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layers={self.layers}, n_params={self.n_params})"

    # -- parameters ----------------------------------------------------------------------

    def unpack(self, theta: Array) -> list[tuple[Array, Array]]:
        """Views ``[(W, b), ...]`` of the flat vector ``theta`` (no copy)."""
        theta = np.asarray(theta)
        if theta.shape != (self.n_params,):
            msg = f"theta must have shape ({self.n_params},), got {theta.shape}"
            raise ValueError(msg)
        out = []
        off = 0
        for a, b in self.layers:
            W = theta[off : off + a * b].reshape(a, b)
            off += a * b
            out.append((W, theta[off : off + b]))
            off += b
        return out

    def init(self, seed: int = 0, dtype: Any = np.float64) -> Array:
        """Initial parameters (zeros for linear models, scaled Gaussian for the MLP)."""
        return np.zeros(self.n_params, dtype=dtype)

    # -- to implement ----------------------------------------------------------------------

    def _forward_backward(
        self, theta: Array, X: Array, y: Array, need_grad: bool
    ) -> tuple[float, list[tuple[Array, Array]]]:
        raise NotImplementedError

    def logits(self, theta: Array, X: Array) -> Array:
        """Model outputs before the link, shape ``(m, out)``."""
        raise NotImplementedError

    # -- public API ------------------------------------------------------------------------

    def loss(self, theta: Array, X: Array, y: Array) -> float:
        """Mean loss over the samples ``(X, y)``."""
        return self._forward_backward(theta, X, y, need_grad=False)[0]

    def grad(self, theta: Array, X: Array, y: Array) -> Array:
        """Gradient of :meth:`loss`, shape ``(n_params,)``."""
        m = X.shape[0]
        _, pairs = self._forward_backward(theta, X, y, need_grad=True)
        parts = []
        for inp, delta in pairs:
            parts.append((inp.T @ delta).ravel() / m)
            parts.append(delta.sum(axis=0) / m)
        return np.concatenate(parts)

    def loss_and_grad(self, theta: Array, X: Array, y: Array) -> tuple[float, Array]:
        """``(loss, grad)`` in one pass."""
        m = X.shape[0]
        loss, pairs = self._forward_backward(theta, X, y, need_grad=True)
        parts = []
        for inp, delta in pairs:
            parts.append((inp.T @ delta).ravel() / m)
            parts.append(delta.sum(axis=0) / m)
        return loss, np.concatenate(parts)

    def subset_grads(self, theta: Array, X: Array, y: Array, subsets: Subsets) -> Array:
        """Gradients on each subset of samples, shape ``(len(subsets), n_params)``.

        Parameters
        ----------
        theta : ndarray, shape (n_params,)
        X, y : ndarray
            All samples and labels.
        subsets : sequence of int arrays or slices
            Non-empty selections of rows of ``X``. Contiguous slices avoid any copy.

        Returns
        -------
        ndarray, shape (N, n_params)
            Row ``j`` equals ``grad(theta, X[subsets[j]], y[subsets[j]])``.
        """
        sels = list(subsets)
        if not sels:
            msg = "subsets must not be empty"
            raise ValueError(msg)
        parts = []
        for j, s in enumerate(sels):
            if isinstance(s, slice):
                Xj, yj = X[s], y[s]
            else:
                idx = np.asarray(s, dtype=np.int64)
                Xj, yj = X[idx], y[idx]
            if Xj.shape[0] == 0:
                msg = f"subsets[{j}] is empty"
                raise ValueError(msg)
            parts.append((Xj, yj))
        dt = np.result_type(theta.dtype, X.dtype)
        out = np.empty((len(sels), self.n_params), dtype=dt)
        # Each subset's gradient is computed from its own rows only (one forward / backward pass
        # per subset): a BLAS product's rows depend on the product's size, so a device that
        # computes only its window gets the bytes the simulation computes for all subsets.
        for j, (Xj, yj) in enumerate(parts):
            _, pairs = self._forward_backward(theta, Xj, yj, need_grad=True)
            inv = 1.0 / Xj.shape[0]
            off = 0
            for inp, delta in pairs:
                a, b = inp.shape[1], delta.shape[1]
                Wg = out[j, off : off + a * b].reshape(a, b)
                np.matmul(inp.T, delta, out=Wg)
                Wg *= inv
                off += a * b
                out[j, off : off + b] = delta.sum(axis=0) * inv
                off += b
        return out

    def predict(self, theta: Array, X: Array) -> Array:
        """Predicted class labels, shape ``(m,)``."""
        return np.asarray(np.argmax(self.logits(theta, X), axis=1), dtype=np.int64)

    def accuracy(self, theta: Array, X: Array, y: Array) -> float:
        """Fraction of correctly classified samples (NaN parameters give 0)."""
        if not np.all(np.isfinite(theta)):
            return 0.0
        return float(np.mean(self.predict(theta, X) == y))


class Logistic(Model):
    """Binary logistic regression (labels 0 / 1): ``loss = mean log(1 + exp(-s (x.w + b)))``."""

    name = "logistic"

    def __init__(self, n_features: int, n_classes: int = 2) -> None:
        if n_classes != 2:
            msg = f"model 'logistic' is binary: needs 2 classes, the dataset has {n_classes}"
            raise ValueError(msg)
        super().__init__([(n_features, 1)])

    def logits(self, theta: Array, X: Array) -> Array:
        ((W, b),) = self.unpack(theta)
        return X @ W + b

    def predict(self, theta: Array, X: Array) -> Array:
        return (self.logits(theta, X)[:, 0] > 0).astype(np.int64)

    def _forward_backward(
        self, theta: Array, X: Array, y: Array, need_grad: bool
    ) -> tuple[float, list[tuple[Array, Array]]]:
        z = self.logits(theta, X)[:, 0]
        yf = y.astype(z.dtype)
        loss = float(np.mean(np.logaddexp(0.0, z) - yf * z))
        if not need_grad:
            return loss, []
        p = 0.5 * (1.0 + np.tanh(0.5 * z))  # stable sigmoid
        return loss, [(X, (p - yf)[:, None])]


class _Linear(Model):
    """A linear map ``x W + b`` to one score per class (the shared part of softmax and least
    squares)."""

    def __init__(self, n_features: int, n_classes: int) -> None:
        super().__init__([(n_features, n_classes)])
        self.n_classes = int(n_classes)

    def logits(self, theta: Array, X: Array) -> Array:
        ((W, b),) = self.unpack(theta)
        return X @ W + b


class Softmax(_Linear):
    """Multinomial logistic regression (softmax + cross-entropy)."""

    name = "softmax"

    def _forward_backward(
        self, theta: Array, X: Array, y: Array, need_grad: bool
    ) -> tuple[float, list[tuple[Array, Array]]]:
        z = self.logits(theta, X)
        loss = float(np.mean(_logsumexp(z) - z[np.arange(z.shape[0]), y]))
        if not need_grad:
            return loss, []
        R = _softmax(z)
        R[np.arange(z.shape[0]), y] -= 1
        return loss, [(X, R)]


class LeastSquares(_Linear):
    """Linear least squares on one-hot targets: ``loss = 0.5 mean ||x W + b - onehot(y)||^2``;
    predicts the argmax."""

    name = "least_squares"

    def _forward_backward(
        self, theta: Array, X: Array, y: Array, need_grad: bool
    ) -> tuple[float, list[tuple[Array, Array]]]:
        R = self.logits(theta, X) - _onehot(y, self.n_classes, np.result_type(theta, X))
        loss = float(0.5 * np.mean(np.sum(R * R, axis=1)))
        return loss, ([(X, R)] if need_grad else [])


class MLP(Model):
    """One hidden layer (``tanh`` or ``relu``) with a softmax output and cross-entropy."""

    name = "mlp"

    def __init__(
        self, n_features: int, n_classes: int, hidden: int = 32, activation: str = "tanh"
    ) -> None:
        if activation not in ("tanh", "relu"):
            msg = f"activation must be 'tanh' or 'relu', got {activation!r}"
            raise ValueError(msg)
        if int(hidden) != hidden or hidden < 1:
            msg = f"hidden must be an integer >= 1, got {hidden!r}"
            raise ValueError(msg)
        super().__init__([(n_features, hidden), (hidden, n_classes)])
        self.activation = activation
        self.n_classes = int(n_classes)

    def init(self, seed: int = 0, dtype: Any = np.float64) -> Array:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x11E7]))
        theta = np.zeros(self.n_params, dtype=dtype)
        for W, _ in self.unpack(theta):
            W[...] = rng.standard_normal(W.shape) * np.sqrt(1.0 / W.shape[0])
        return theta

    def _hidden(self, theta: Array, X: Array) -> tuple[Array, Array]:
        (W1, b1), _ = self.unpack(theta)
        A = X @ W1 + b1
        H = np.tanh(A) if self.activation == "tanh" else np.maximum(A, 0)
        return A, H

    def logits(self, theta: Array, X: Array) -> Array:
        _, (W2, b2) = self.unpack(theta)
        return self._hidden(theta, X)[1] @ W2 + b2

    def _forward_backward(
        self, theta: Array, X: Array, y: Array, need_grad: bool
    ) -> tuple[float, list[tuple[Array, Array]]]:
        _, (W2, _) = self.unpack(theta)
        A, H = self._hidden(theta, X)
        z = H @ W2 + self.unpack(theta)[1][1]
        rows = np.arange(z.shape[0])
        loss = float(np.mean(_logsumexp(z) - z[rows, y]))
        if not need_grad:
            return loss, []
        R2 = _softmax(z)
        R2[rows, y] -= 1
        dH = R2 @ W2.T
        dA = dH * (1.0 - H * H) if self.activation == "tanh" else dH * (A > 0)
        return loss, [(X, dA), (H, R2)]


def get(name: str, n_features: int, n_classes: int, **params: Any) -> Model:
    """Build a model by name.

    Parameters
    ----------
    name : {"logistic", "softmax", "least_squares", "mlp"}
    n_features, n_classes : int
    **params
        ``hidden`` and ``activation`` for ``mlp``.

    Returns
    -------
    Model

    Raises
    ------
    ValueError
        Unknown name, parameters the model does not take, or ``logistic`` with more than two
        classes.
    """
    classes: dict[str, Any] = {
        "logistic": Logistic,
        "softmax": Softmax,
        "least_squares": LeastSquares,
        "mlp": MLP,
    }
    if name not in classes:
        msg = f"model must be one of {', '.join(MODELS)}, got {name!r}"
        raise ValueError(msg)
    if name != "mlp" and params:
        msg = f"model {name!r} takes no parameters, got {sorted(params)}"
        raise ValueError(msg)
    model: Model = classes[name](n_features, n_classes, **params)
    return model
