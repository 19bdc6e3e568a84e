"""Type-checked by the CI lint stage (``mypy --strict tests/typing``), never run: the public
signatures give the result the input's kind and dtype."""

from __future__ import annotations

from typing import Any, assert_type

import numpy as np
import torch
from numpy.typing import NDArray

import cyclad.aggregators as agg
from cyclad import compression, models
from cyclad.torch import TorchModel

x32 = np.zeros((4, 3), dtype=np.float32)
x64 = np.zeros((4, 3), dtype=np.float64)
t = torch.zeros(4, 3)
rows = [torch.zeros(3) for _ in range(4)]

assert_type(agg.mean(x32), NDArray[np.float32])
assert_type(agg.trimmed_mean(x64, 1), NDArray[np.float64])
assert_type(agg.krum(t, 1), torch.Tensor)
assert_type(agg.geometric_median(rows), torch.Tensor)
assert_type(agg.nnm(x32, 1), NDArray[np.float32])
assert_type(agg.median([[1.0, 2.0], [3.0, 4.0]]), NDArray[Any])

compressor: compression.CompressorLike = compression.ErrorFeedback(compression.TopK(ratio=0.1))
model: models.ModelLike = TorchModel(torch.nn.Linear(3, 2))
