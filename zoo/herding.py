"""Exemplar selection by iCaRL herding (Rebuffi et al. 2017), as MEMO and PyCIL keep their memories.

For one class with L2-normalised features φ and their mean μ (not normalised again: iCaRL's Algorithm 4 and
PyCIL's ``_construct_exemplar`` take the plain mean), the k-th exemplar is the sample (not yet chosen) that
brings the mean of the chosen ones closest to μ: argmin_x ‖μ − (φ(x) + Σ_{j<k} φ(p_j)) / k‖. The order
matters: cutting a class's exemplars to a smaller quota keeps the first ones.

Under a fixed total budget every seen class gets ``budget // seen classes``; a class with fewer samples keeps
what it has and its spare quota is **not** handed to others (the MEMO repository's behaviour; PyCIL's base
class would index past the class's end).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def herding_order(features: torch.Tensor, m: int) -> torch.Tensor:
    """The first ``min(m, n)`` herding picks among ``features`` (n, d), as indices in pick order."""
    phi = F.normalize(features.float(), dim=1)
    mu = phi.mean(0)
    n = len(phi)
    chosen: list[int] = []
    running = torch.zeros_like(mu)
    available = torch.ones(n, dtype=torch.bool, device=phi.device)
    for k in range(1, min(m, n) + 1):
        dist = (mu[None, :] - (running[None, :] + phi) / k).norm(dim=1)
        dist[~available] = float("inf")
        i = int(dist.argmin())
        chosen.append(i)
        available[i] = False
        running += phi[i]
    return torch.tensor(chosen, dtype=torch.long, device=features.device)


def class_exemplars(features: torch.Tensor, labels: torch.Tensor, c: int, m: int) -> torch.Tensor:
    """Indices of class ``c``'s first ``min(m, n_c)`` herding picks among ``features``, in pick order."""
    idx = torch.nonzero(labels == c).flatten()
    return idx[herding_order(features[idx], m)] if len(idx) and m > 0 else idx[:0]


def select_exemplars(features: torch.Tensor, labels: torch.Tensor, classes: Sequence[int],
                     budget: int) -> tuple[torch.Tensor, dict[int, int]]:
    """Indices of the exemplars to keep for ``classes`` under a total ``budget``: per class the first
    ``budget // len(classes)`` herding picks (fewer when the class runs out). Returns (indices, kept per
    class)."""
    quota = budget // max(len(classes), 1)
    picked = [class_exemplars(features, labels, c, quota) for c in classes]
    kept = {int(c): len(p) for c, p in zip(classes, picked)}
    return (torch.cat(picked) if picked else torch.empty(0, dtype=torch.long)), kept
