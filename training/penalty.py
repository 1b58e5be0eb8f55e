"""Independence penalties between the biological and technical halves of the latent space.

MFD only disentangles if f_bio carries no information about f_tech: otherwise the biological read-out can
quietly re-learn the technical bias through correlated features. Two ways to push towards that:

- `cross_covariance_penalty`: z-score every feature over the batch, take the [D_bio, D_tech] cross-covariance
  (that is, the cross-correlation matrix) and penalise its Frobenius norm. Cheap, no extra parameters, but only
  sees linear dependence.
- `AdversarialPenalty`: a discriminator learns to tell real pairs (f_bio[i], f_tech[i]) from shuffled pairs
  (f_bio[i], f_tech[perm(i)]); shuffling destroys any dependence, so if the discriminator can tell them apart
  there is dependence left, linear or not. It has its own optimizer; the main model is penalised by how well
  the discriminator does (log 2 minus its loss: zero at chance).
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _zscore(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x = x - x.mean(dim=0, keepdim=True)
    return x / (x.std(dim=0, unbiased=True, keepdim=True) + eps)


def cross_correlation(f_bio: torch.Tensor, f_tech: torch.Tensor) -> torch.Tensor:
    """[D_bio, D_tech] correlation between every biological and every technical feature over the batch."""
    n = f_bio.shape[0]
    return _zscore(f_bio).T @ _zscore(f_tech) / (n - 1)


def cross_covariance_penalty(f_bio: torch.Tensor, f_tech: torch.Tensor) -> torch.Tensor:
    """Frobenius norm of the z-scored cross-covariance, divided by sqrt(D_bio·D_tech).

    The normalisation makes the value the root-mean-square correlation, so one penalty weight works for any
    latent size. With N independent samples its floor is about 1/sqrt(N), not zero.
    """
    if f_bio.shape[0] < 2:
        raise ValueError("cross_covariance_penalty needs a batch of at least 2 windows")
    corr = cross_correlation(f_bio, f_tech)
    return torch.linalg.matrix_norm(corr, ord="fro") / math.sqrt(corr.numel())


class AdversarialPenalty(nn.Module):
    """Discriminator on [f_bio, f_tech]: real pairs vs pairs with f_tech shuffled across the batch."""

    def __init__(self, d_bio: int, d_tech: int, hidden: int = 64, lr: float = 1e-3, steps: int = 1):
        super().__init__()
        self.steps = steps
        self.disc = nn.Sequential(
            nn.Linear(d_bio + d_tech, hidden), nn.GELU(),
            nn.Linear(hidden, hidden), nn.GELU(),
            nn.Linear(hidden, 1),
        )
        self.optimizer = torch.optim.Adam(self.disc.parameters(), lr=lr)

    @staticmethod
    def _pairs(f_bio: torch.Tensor, f_tech: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = f_bio.shape[0]
        # A derangement-ish permutation: roll by a random non-zero offset, so no pair stays real.
        shift = int(torch.randint(1, max(n, 2), (1,)).item()) if n > 1 else 0
        shuffled = torch.roll(f_tech, shifts=shift, dims=0)
        x = torch.cat([torch.cat([f_bio, f_tech], 1), torch.cat([f_bio, shuffled], 1)], 0)
        y = torch.cat([torch.ones(n, device=x.device), torch.zeros(n, device=x.device)])
        return x, y

    def discriminator_loss(self, f_bio: torch.Tensor, f_tech: torch.Tensor) -> torch.Tensor:
        x, y = self._pairs(f_bio, f_tech)
        return F.binary_cross_entropy_with_logits(self.disc(x).squeeze(1), y)

    def discriminator_step(self, f_bio: torch.Tensor, f_tech: torch.Tensor) -> float:
        """Train the discriminator on detached features (gradients averaged across DDP ranks)."""
        f_bio, f_tech = f_bio.detach(), f_tech.detach()
        loss = torch.zeros(())
        for _ in range(self.steps):
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.discriminator_loss(f_bio, f_tech)
            loss.backward()
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                for p in self.disc.parameters():
                    if p.grad is not None:
                        dist.all_reduce(p.grad)
                        p.grad /= dist.get_world_size()
            self.optimizer.step()
        return float(loss.detach())

    def forward(self, f_bio: torch.Tensor, f_tech: torch.Tensor) -> torch.Tensor:
        """Penalty for the main model: log 2 − discriminator loss (gradients reach the features only)."""
        params = list(self.disc.parameters())
        for p in params:
            p.requires_grad_(False)
        try:
            loss = self.discriminator_loss(f_bio, f_tech)
        finally:
            for p in params:
                p.requires_grad_(True)
        return math.log(2.0) - loss
