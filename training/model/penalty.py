"""Training layer (model): independence penalties between the biological and technical subspaces, as the authors define
them.

- `covariance`: cov = z(f_tech)ᵀ z(f_bio) / N with z = per-feature z-score over the batch (unbiased std,
  NaN/±inf → 0); penalty = Frobenius norm of cov (or its L1 norm). No normalisation by the matrix size and no
  warm-up: the coefficient (`coeff_cov`, 0.01 in the paper's models) carries the scale.
- `adversarial`: a discriminator tells real pairs [f_bio, f_tech] from pairs with f_tech shuffled across the
  batch; the model is trained against flipped labels, the discriminator on true ones with its own Adam (amsgrad).
- `predictor`: two MLPs predict f_bio from f_tech and f_tech from f_bio; the model minimises their total R²
  (sum of squared per-feature correlations between prediction and target), the predictors maximise it.
- `covariance+adversarial`, `covariance+predictor`: the covariance norm plus that term.
The model's loss is BCE + coeff_cov · (sum of its terms), as in the reference.
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

PENALTY_KINDS = ("none", "covariance", "adversarial", "predictor", "covariance+adversarial", "covariance+predictor")


def z_score(x: torch.Tensor) -> torch.Tensor:
    """Per-column z-score over the batch; constant columns give 0, not NaN (the reference's nan_to_num)."""
    x = (x - x.mean(0)) / x.std(0)
    return torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def cross_covariance(f_bio: torch.Tensor, f_tech: torch.Tensor) -> torch.Tensor:
    """[D_tech, D_bio] covariance of the z-scored subspaces (a correlation matrix up to N/(N−1))."""
    return z_score(f_tech).T @ z_score(f_bio) / f_tech.shape[0]


def covariance_penalty(f_bio: torch.Tensor, f_tech: torch.Tensor, frobenius: bool = True) -> torch.Tensor:
    cov = cross_covariance(f_bio, f_tech)
    return torch.linalg.matrix_norm(cov) if frobenius else cov.abs().sum()


def total_r2(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Σ_i corr(prediction_i, target_i)², each correlation clipped to [−1, 1]."""
    p = torch.nan_to_num((prediction - prediction.mean(0)) / prediction.std(0))
    t = torch.nan_to_num((target - target.mean(0)) / target.std(0))
    corr = (p * t).sum(0) / p.shape[0]
    return corr.clamp(-1.0, 1.0).pow(2).sum()


def discriminator(latent: int, hidden: int, layers: int) -> nn.Sequential:
    """Linear(2C, h) − LeakyReLU, (layers − 1) × [Linear(h, h) − LeakyReLU], Linear(h, 1) → a logit."""
    if layers == 0:
        return nn.Sequential(nn.Linear(latent, 1))
    blocks: List[nn.Module] = [nn.Linear(latent, hidden), nn.LeakyReLU()]
    blocks += [nn.Sequential(nn.Linear(hidden, hidden), nn.LeakyReLU()) for _ in range(layers - 1)]
    return nn.Sequential(*blocks, nn.Linear(hidden, 1))


def predictor(d_in: int, d_out: int, hidden: int, layers: int) -> nn.Sequential:
    """Linear − BatchNorm − LeakyReLU blocks of width h (`layers` of them), then Linear(h, d_out)."""
    if layers == 0:
        return nn.Sequential(nn.Linear(d_in, d_out))
    blocks: List[nn.Module] = [nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU()]
    for _ in range(layers - 1):
        blocks += [nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU()]
    return nn.Sequential(*blocks, nn.Linear(hidden, d_out))


def adversarial_batch(f_bio: torch.Tensor, f_tech: torch.Tensor, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Real pairs (label 1) stacked over pairs whose technical half is permuted across the batch (label 0)."""
    real = torch.cat([f_bio, f_tech], dim=1)
    fake = torch.cat([f_bio, f_tech[perm]], dim=1)
    x = torch.cat([real, fake], dim=0)
    y = torch.cat([torch.ones(len(real), 1), torch.zeros(len(fake), 1)]).to(x)
    return x, y


class IndependencePenalty(nn.Module):
    """The model's independence term and, for adversarial kinds, the adversary with its own optimiser.

    Per training step: `model_term` (inside the model's loss) then `adversary_step` (on detached features).
    """

    def __init__(self, kind: str, d_bio: int, d_tech: int, *, frobenius: bool = True, hidden: int = 1024,
                 layers: int = 3, lr: float = 1e-3):
        super().__init__()
        if kind not in PENALTY_KINDS:
            raise ValueError(f"penalty kind must be one of {', '.join(PENALTY_KINDS)}, got {kind!r}")
        self.kind, self.frobenius = kind, frobenius
        self.uses_covariance = kind.startswith("covariance")
        self.discriminator: Optional[nn.Module] = None
        self.predictor_bio: Optional[nn.Module] = None
        self.predictor_tech: Optional[nn.Module] = None
        if kind.endswith("adversarial"):
            self.discriminator = discriminator(d_bio + d_tech, hidden, layers)
        if kind.endswith("predictor"):
            # The reference builds both predictors but calls `predictor_bio` for both directions (a bug that only
            # runs when D_bio == D_tech); the intent, implemented here, is one predictor per direction.
            self.predictor_bio = predictor(d_tech, d_bio, hidden, layers)
            self.predictor_tech = predictor(d_bio, d_tech, hidden, layers)
        adversary = list(self.parameters())
        self.optimizer = torch.optim.Adam(adversary, lr=lr, amsgrad=True) if adversary else None
        self._perm: Optional[torch.Tensor] = None

    @property
    def has_adversary(self) -> bool:
        return self.optimizer is not None

    def model_term(self, f_bio: torch.Tensor, f_tech: torch.Tensor) -> dict[str, torch.Tensor]:
        """The terms the model minimises, by name; their sum is what `coeff_cov` multiplies."""
        terms: dict[str, torch.Tensor] = {}
        if self.uses_covariance:
            terms["covariance"] = covariance_penalty(f_bio, f_tech, self.frobenius)
        if self.predictor_bio is not None and self.predictor_tech is not None:
            terms["r2"] = total_r2(self.predictor_bio(f_tech), f_bio) + total_r2(self.predictor_tech(f_bio), f_tech)
        if self.discriminator is not None:
            self._perm = torch.randperm(f_bio.shape[0], device=f_bio.device)
            x, y = adversarial_batch(f_bio, f_tech, self._perm)
            terms["adversarial"] = F.binary_cross_entropy_with_logits(self.discriminator(x), 1 - y)
        return terms

    def adversary_step(self, f_bio: torch.Tensor, f_tech: torch.Tensor) -> float:
        """One update of the predictors (maximise R²) or the discriminator (true labels); returns its loss."""
        if self.optimizer is None:
            return 0.0
        f_bio, f_tech = f_bio.detach(), f_tech.detach()
        if self.predictor_bio is not None and self.predictor_tech is not None:
            loss = -(total_r2(self.predictor_bio(f_tech), f_bio) + total_r2(self.predictor_tech(f_bio), f_tech))
        else:
            assert self.discriminator is not None
            perm = self._perm if self._perm is not None else torch.randperm(f_bio.shape[0], device=f_bio.device)
            x, y = adversarial_batch(f_bio, f_tech, perm)
            loss = F.binary_cross_entropy_with_logits(self.discriminator(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())
