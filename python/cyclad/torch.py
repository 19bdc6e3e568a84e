"""PyTorch helpers (the optional ``torch`` extra: ``pip install "cyclad[torch]"``).

:class:`TorchAdapter` views a ``torch.nn.Module``'s parameters as one flat float64 vector (get,
set, gradient), for users who bring their own PyTorch model to cyclad's aggregators and
training loop.

This module imports torch when it is imported; without torch it raises ``ImportError`` naming
the extra. (Its name does not shadow torch: every import in cyclad is absolute, so ``import
torch`` here and elsewhere in the package is the real PyTorch.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    msg = f"cyclad.torch needs PyTorch ({exc}): pip install 'cyclad[torch]'"
    raise ImportError(msg) from exc

from cyclad._validation import ArgumentError

__all__ = ["TorchAdapter"]

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
