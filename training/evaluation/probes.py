"""Training layer (evaluation): the authors' post-hoc independence probes, trained on frozen features.

Their `independence_metrics.py` fits, once per checkpoint, on the test split's features:
- a *shuffle discriminator*: an MLP (3 hidden layers of 512, BatchNorm + ReLU, logit out) telling real
  [f_bio, f_tech] pairs from [f_bio, f_tech permuted within the batch]; batch 512, Adam lr 1e-3, one epoch, on a
  70/30 random split of windows. Reported: `shuffled_train_accuracy` (last training batch) and
  `shuffled_val_accuracy` (mean over the validation batches, as Lightning's epoch logging averages them);
  0.5 = independent.
- an *R² predictor* per direction: an MLP (3 hidden layers of 256, BatchNorm + LeakyReLU) predicting one part from
  the other, batch 256, Adam lr 1e-3, one epoch; its loss is minus the sum over target features of the squared
  correlation between prediction and target (per batch). Reported as `pred_bio_tech_*_R2` (f_bio → f_tech) and
  `pred_tech_bio_*_R2`, **as a positive total R²** (their logged value is the loss, i.e. its negative); 0 = nothing
  predictable, at most the number of target features.
Their predictor sizes its output by its input (it only works when d_bio = d_tech); ours sizes it by the target.
Seeds are fixed here (theirs are free), so a report is reproducible on one machine.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..model.penalty import adversarial_batch, predictor, total_r2


def _discriminator(d_in: int, hidden: int) -> nn.Sequential:
    """Their probe: 3 × [Linear, BatchNorm, ReLU], then Linear(hidden, 1) (not the training adversary, which has
    LeakyReLU and no BatchNorm)."""
    layers: list[nn.Module] = []
    for k in range(3):
        layers += [nn.Linear(d_in if k == 0 else hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(hidden, 1))


def _split(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    n_fit = int(round(0.7 * n))
    return order[:n_fit], order[n_fit:]


def _batches(index: torch.Tensor, size: int, generator: torch.Generator):
    index = index[torch.randperm(len(index), generator=generator)]
    for start in range(0, len(index), size):
        chunk = index[start:start + size]
        if len(chunk) > 1:   # BatchNorm needs two rows in training mode
            yield chunk


def _shuffled_pairs(bio: torch.Tensor, tech: torch.Tensor, generator: torch.Generator
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = adversarial_batch(bio, tech, torch.randperm(len(tech), generator=generator))
    return x, y.squeeze(1)


def shuffle_discriminator(f_bio: np.ndarray, f_tech: np.ndarray, *, seed: int = 0, batch_size: int = 512,
                          hidden: int = 512, lr: float = 1e-3, epochs: int = 1) -> dict[str, float]:
    """Train/validation accuracy of an MLP telling real (bio, tech) pairs from shuffled ones (see module doc)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    bio, tech = torch.as_tensor(f_bio, dtype=torch.float32), torch.as_tensor(f_tech, dtype=torch.float32)
    fit, val = _split(len(bio), g)
    net = _discriminator(bio.shape[1] + tech.shape[1], hidden)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    train_acc = float("nan")
    for _ in range(epochs):
        net.train()
        for idx in _batches(fit, batch_size, g):
            x, y = _shuffled_pairs(bio[idx], tech[idx], g)
            logit = net(x).squeeze(1)
            loss = F.binary_cross_entropy_with_logits(logit, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            train_acc = float(((logit > 0).float() == y).float().mean())
    net.eval()
    with torch.no_grad():
        accs = []
        for idx in _batches(val, batch_size, g):
            x, y = _shuffled_pairs(bio[idx], tech[idx], g)
            accs.append(float(((net(x).squeeze(1) > 0).float() == y).float().mean()))
    return {"shuffled_train_accuracy": train_acc, "shuffled_val_accuracy": float(np.mean(accs)) if accs
            else float("nan")}


def r2_predictor(source: np.ndarray, target: np.ndarray, *, seed: int = 0, batch_size: int = 256,
                 hidden: int = 256, lr: float = 1e-3, epochs: int = 1) -> dict[str, float]:
    """Total R² of an MLP predicting `target` features from `source` ones: last training batch and the mean over
    validation batches (see module doc)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x_all, y_all = torch.as_tensor(source, dtype=torch.float32), torch.as_tensor(target, dtype=torch.float32)
    fit, val = _split(len(x_all), g)
    net = predictor(x_all.shape[1], y_all.shape[1], hidden, layers=3)   # the training predictor's shape
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    train_r2 = float("nan")
    for _ in range(epochs):
        net.train()
        for idx in _batches(fit, batch_size, g):
            r2 = total_r2(net(x_all[idx]), y_all[idx])
            opt.zero_grad()
            (-r2).backward()
            opt.step()
            train_r2 = float(r2.detach())
    net.eval()
    with torch.no_grad():
        vals = [float(total_r2(net(x_all[idx]), y_all[idx])) for idx in _batches(val, batch_size, g)]
    return {"train_R2": train_r2, "val_R2": float(np.mean(vals)) if vals else float("nan")}


def posthoc_probes(f_bio: np.ndarray, f_tech: np.ndarray, *, seed: int = 0) -> dict[str, float]:
    """All three probes with the authors' key names (`independence/` prefix dropped); torch's global RNG (seeded
    for the weights' initialisation) is restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        out = shuffle_discriminator(f_bio, f_tech, seed=seed)
        out.update({f"pred_bio_tech_{k}": v for k, v in r2_predictor(f_bio, f_tech, seed=seed).items()})
        out.update({f"pred_tech_bio_{k}": v for k, v in r2_predictor(f_tech, f_bio, seed=seed).items()})
    return out
