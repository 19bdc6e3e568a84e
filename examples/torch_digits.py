"""Robust data-parallel training with plain PyTorch autograd and cyclad.torch.

An MLP on scikit-learn's digits, 8 simulated workers, 2 of them Byzantine (they send their
gradient flipped and scaled by -10). Each step every worker computes the gradient of its own
mini-batch with autograd; the gradients are flattened (cyclad.torch.flatten_grads), combined by
the mean or by a robust rule (cyclad.torch.RobustAggregator), written back
(unflatten_grads_) and applied by a torch optimizer.

    python examples/torch_digits.py [--steps 300] [--rule nnm+trimmed_mean]
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import cyclad.torch as ctorch

WORKERS, BYZANTINE = 8, 2


def train(rule: str | None, steps: int, seed: int = 0) -> float:
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X / 16.0, y, test_size=0.25, random_state=seed)
    Xtr, Xte = torch.tensor(Xtr, dtype=torch.float32), torch.tensor(Xte, dtype=torch.float32)
    ytr, yte = torch.tensor(ytr), torch.tensor(yte)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    combine = (
        (lambda G: torch.stack(G).mean(dim=0))
        if rule is None
        else ctorch.RobustAggregator(rule, f=BYZANTINE)
    )
    g = torch.Generator().manual_seed(seed)
    shards = torch.randperm(len(ytr), generator=g).chunk(WORKERS)
    for _ in range(steps):
        grads = []
        for w, shard in enumerate(shards):
            batch = shard[torch.randint(len(shard), (32,), generator=g)]
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(Xtr[batch]), ytr[batch]).backward()
            grad = ctorch.flatten_grads(model)
            grads.append(-10.0 * grad if w < BYZANTINE else grad)
        ctorch.unflatten_grads_(model, combine(grads))
        opt.step()
    with torch.no_grad():
        return float((model(Xte).argmax(dim=1) == yte).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rule", default="nnm+trimmed_mean")
    args = ap.parse_args()
    print(f"{WORKERS} workers, {BYZANTINE} Byzantine (gradient x -10), {args.steps} steps")
    print(f"mean:              test accuracy {train(None, args.steps):.3f}")
    print(f"{args.rule + ':':<18} test accuracy {train(args.rule, args.steps):.3f}")


if __name__ == "__main__":
    main()
