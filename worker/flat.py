"""One contiguous float32 vector for a model's weights and BatchNorm statistics.

Every parameter (and every floating-point buffer, e.g. BatchNorm running mean/var) of the
model becomes a *view* into one flat tensor ``state = [params | buffers]``, and every
``p.grad`` a view into one flat gradient. Then:

* loading an anchor from the object store is one ``copy_`` of a zero-copy numpy array;
* the Langevin kernels run on one tensor (one kernel launch per op, not one per layer);
* a result crosses the process boundary as one numpy buffer (Ray moves it without pickling).

This is the same trick as DDP's gradient buckets; it is what keeps the round trip cheap.
Integer buffers (``num_batches_tracked``) stay local: nothing reads them with BN momentum set.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn


class FlatState:
    """Rebinds ``model``'s parameters, grads and float buffers as views of flat tensors."""

    def __init__(self, model: nn.Module):
        params = [p for p in model.parameters()]
        buffers = [(m, name, b) for m in model.modules() for name, b in m.named_buffers(recurse=False)
                   if b is not None and b.is_floating_point()]
        self.num_params = sum(p.numel() for p in params)
        self.num_buffers = sum(b.numel() for _, _, b in buffers)
        device = params[0].device if params else torch.device("cpu")
        self.state = torch.zeros(self.num_params + self.num_buffers, dtype=torch.float32, device=device)
        self.grad = torch.zeros(self.num_params, dtype=torch.float32, device=device)
        self.params = self.state[: self.num_params]
        self.buffers = self.state[self.num_params:]
        off = 0
        with torch.no_grad():
            for p in params:
                n = p.numel()
                self.state[off:off + n].copy_(p.reshape(-1))
                p.data = self.state[off:off + n].view_as(p)
                p.grad = self.grad[off:off + n].view_as(p)
                off += n
            for module, name, b in buffers:
                n = b.numel()
                self.state[off:off + n].copy_(b.reshape(-1))
                module._buffers[name] = self.state[off:off + n].view_as(b)
                off += n

    @property
    def size(self) -> int:
        return self.num_params + self.num_buffers

    def load(self, vector: np.ndarray | torch.Tensor) -> None:
        """Copy a full ``[params | buffers]`` vector into the model (one copy)."""
        if isinstance(vector, np.ndarray):
            with warnings.catch_warnings():  # object-store arrays are read-only; we only read them
                warnings.simplefilter("ignore", UserWarning)
                src = torch.from_numpy(vector)
        else:
            src = vector
        if src.numel() != self.size:
            raise ValueError(f"state vector has {src.numel()} values, model needs {self.size}")
        self.state.copy_(src.reshape(-1), non_blocking=True)

    def numpy(self) -> np.ndarray:
        """The current state as a float32 numpy array (a copy when on GPU)."""
        return self.state.detach().cpu().numpy().copy()


def state_vector(model: nn.Module) -> torch.Tensor:
    """A fresh ``[params | float buffers]`` vector of ``model`` without rebinding it."""
    parts = [p.detach().reshape(-1).float().cpu() for p in model.parameters()]
    parts += [b.detach().reshape(-1).float().cpu() for b in model.buffers() if b.is_floating_point()]
    return torch.cat(parts) if parts else torch.zeros(0)
