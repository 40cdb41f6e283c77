"""Training losses: Wasserstein critic/generator losses, WGAN-GP gradient penalty, Dice+CE.

Shapes follow the package convention ``(B, C, X, Y, Z)``. The critic is conditional
(``critic(condition, candidate)`` as ``nets.patch_critic``) and returns patch scores; a
Wasserstein loss averages them over patches and batch.

Gradient penalty (Gulrajani et al. 2017): for ``x_hat = a * real + (1 - a) * fake`` with
``a ~ U(0, 1)`` per sample, ``GP = mean_b (||d critic(cond, x_hat) / d x_hat||_2 - 1)^2``,
the norm taken per sample over ``(C, X, Y, Z)``. The gradient is built with
``create_graph=True`` so the penalty itself is differentiated (double backward: no
``torch.compile``, and evaluated in float32 outside autocast).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "critic_wasserstein_loss",
    "generator_wasserstein_loss",
    "gradient_penalty",
    "interpolate",
    "dice_ce_loss",
    "image_loss",
]


def critic_wasserstein_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Critic loss ``mean(D(fake)) - mean(D(real))`` (minimised: real scores high, fake low).

    Args:
        real_scores: critic output for real candidates, any shape ``(B, ...)``.
        fake_scores: critic output for generated candidates, same batch.

    Returns:
        Scalar tensor.
    """
    return fake_scores.float().mean() - real_scores.float().mean()


def generator_wasserstein_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """Adversarial generator loss ``-mean(D(fake))``.

    Args:
        fake_scores: critic output for generated candidates ``(B, ...)``.

    Returns:
        Scalar tensor.
    """
    return -fake_scores.float().mean()


def interpolate(real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random points on the lines between real and fake samples, ``a*real + (1-a)*fake``.

    Args:
        real: real candidates ``(B, C, X, Y, Z)``.
        fake: generated candidates, same shape (detached by the caller or here).
        generator: torch RNG for ``a`` (one value per sample, on ``real``'s device).

    Returns:
        ``(B, C, X, Y, Z)`` float32 tensor that requires grad.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} must have the same shape")
    shape = (real.shape[0],) + (1,) * (real.ndim - 1)
    alpha = torch.rand(shape, generator=generator, device=generator.device if generator is not None else "cpu")
    alpha = alpha.to(real.device)
    mixed = alpha * real.detach().float() + (1 - alpha) * fake.detach().float()
    return mixed.requires_grad_(True)


def gradient_penalty(
    critic: nn.Module,
    condition: torch.Tensor,
    real: torch.Tensor,
    fake: torch.Tensor,
    generator: torch.Generator | None = None,
    return_norms: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """WGAN-GP penalty ``mean((||grad_x_hat critic(condition, x_hat)||_2 - 1)^2)``.

    Args:
        critic: conditional critic, ``critic(condition, candidate) -> scores``.
        condition: condition ``(B, C_cond, X, Y, Z)`` (e.g. the low-exposure input).
        real: real candidates ``(B, C, X, Y, Z)``.
        fake: generated candidates (gradients do not flow into the generator).
        generator: torch RNG for the interpolation weights.
        return_norms: also return the per-sample gradient norms ``(B,)`` (detached).

    Returns:
        The scalar penalty (differentiable w.r.t. the critic's weights), and the norms if asked.
    """
    mixed = interpolate(real, fake, generator)
    with torch.autocast(mixed.device.type, enabled=False):
        scores = critic(condition.float(), mixed)
        (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    norms = grad.flatten(1).norm(2, dim=1)
    penalty = ((norms - 1.0) ** 2).mean()
    return (penalty, norms.detach()) if return_norms else penalty


def image_loss(prediction: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Voxel-wise regression loss on normalised volumes.

    Args:
        prediction: ``(B, C, X, Y, Z)``.
        target: same shape.
        kind: ``l1`` (mean absolute error) or ``l2`` (mean squared error).
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
    diff = prediction.float() - target.float()
    if kind == "l1":
        return diff.abs().mean()
    if kind == "l2":
        return (diff * diff).mean()
    raise ValueError(f"image loss kind must be 'l1' or 'l2', got {kind!r}")


def dice_ce_loss(
    num_classes: int,
    class_weights: Sequence[float] | None = None,
    lambda_dice: float = 1.0,
    lambda_ce: float = 1.0,
) -> nn.Module:
    """MONAI ``DiceCELoss`` for logits ``(B, K, X, Y, Z)`` and int labels ``(B, 1, X, Y, Z)``.

    Softmax over classes, labels one-hot encoded, Dice averaged over classes with background
    included (a rare class counts as much as concrete), cross-entropy weighted by
    ``class_weights`` (``K`` values, rare classes up-weighted).

    Args:
        num_classes: ``K``.
        class_weights: cross-entropy weight per class, or ``None``.
        lambda_dice: weight of the Dice term.
        lambda_ce: weight of the cross-entropy term.

    Returns:
        The loss module; call it as ``loss(logits, label)`` with ``label`` of dtype int64.
    """
    from monai.losses import DiceCELoss

    weight = None
    if class_weights is not None:
        if len(class_weights) != num_classes or any(w < 0 for w in class_weights):
            raise ValueError(f"class_weights must be {num_classes} non-negative numbers, got {list(class_weights)}")
        weight = torch.tensor([float(w) for w in class_weights])
    return DiceCELoss(to_onehot_y=True, softmax=True, weight=weight, lambda_dice=lambda_dice, lambda_ce=lambda_ce)
