"""Low-rank re-compression of LoRA updates.

``recompress`` reduces a factored update ``B @ A`` to a lower rank without ever forming the
``out x in`` matrix: both factors are orthogonalised by QR, the small ``R x R`` core
``R_B @ R_A^T`` is decomposed by SVD, and the singular values are split as square roots into
the two new factors. Because ``Q_B`` and ``Q_A`` have orthonormal columns, the singular values of
the core are those of ``B @ A``, so truncating the core gives the Eckart-Young best rank-k
approximation and its Frobenius error comes straight from the discarded singular values.

``truncated_svd`` does the same for a dense update (TIES and DARE produce dense updates, which
are not low-rank) and is used one module at a time.
"""

from __future__ import annotations

import torch

from loramgr.hub.errors import InvalidArgument

# QR and SVD run in float64: the factors are thin (R columns), so this costs little and keeps an
# exact re-compression exact to float32 round-off.
_COMPUTE_DTYPE = torch.float64


def recompress(A: torch.Tensor, B: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Best rank-``rank`` approximation of ``B @ A``, computed from the factors.

    ``A`` is ``(R, in)`` and ``B`` is ``(out, R)``. Returns ``(A', B', relative_error)`` with
    ``A'`` of shape ``(k, in)``, ``B'`` of shape ``(out, k)``, ``k = min(rank, R)``, and
    ``relative_error = ||B A - B' A'||_F / ||B A||_F`` (0.0 for a zero update). With
    ``rank >= R`` the factors come back unchanged and the error is 0.0. Memory stays at a few
    ``(out + in) x R`` matrices.

    Raises ``InvalidArgument`` for a rank below 1 or factors whose inner dimensions differ.
    """
    _check_rank(rank)
    if A.ndim != 2 or B.ndim != 2 or A.shape[0] != B.shape[1]:
        raise InvalidArgument(f"factors do not chain: A is {tuple(A.shape)}, B is {tuple(B.shape)}")
    if rank >= A.shape[0]:
        return A, B, 0.0
    q_b, r_b = torch.linalg.qr(B.to(_COMPUTE_DTYPE))  # B = Q_B R_B, Q_B: (out, m)
    q_a, r_a = torch.linalg.qr(A.to(_COMPUTE_DTYPE).T)  # A^T = Q_A R_A, Q_A: (in, n)
    u, s, vh = torch.linalg.svd(r_b @ r_a.T, full_matrices=False)  # the small core
    new_A, new_B = _split_singular_values(u, s, vh, rank, left=q_b, right=q_a.T)
    return new_A.to(A.dtype), new_B.to(B.dtype), relative_tail(s, rank)


def truncated_svd(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Factor a dense ``(out, in)`` update into its best rank-``rank`` approximation.

    Returns ``(A, B, relative_error)`` like ``recompress``; ``A`` has ``min(rank, out, in)`` rows.
    Raises ``InvalidArgument`` for a rank below 1.
    """
    _check_rank(rank)
    u, s, vh = torch.linalg.svd(delta.to(_COMPUTE_DTYPE), full_matrices=False)
    A, B = _split_singular_values(u, s, vh, rank)
    return A.to(delta.dtype), B.to(delta.dtype), relative_tail(s, rank)


def relative_tail(singular_values: torch.Tensor, rank: int) -> float:
    """``sqrt(sum of the discarded s^2 / sum of all s^2)``: the relative Frobenius error of
    keeping the first ``rank`` singular values (0.0 when all are zero)."""
    energy = singular_values.double().square()
    total = float(energy.sum())
    return (float(energy[rank:].sum()) / total) ** 0.5 if total > 0 else 0.0


def _split_singular_values(u, s, vh, rank, *, left=None, right=None):
    """Keep ``rank`` singular triplets and give each factor ``sqrt(s)``, so A and B have
    comparable norms (better conditioned in half precision than putting all of s in B)."""
    root = s[:rank].sqrt()
    B = u[:, :rank] * root
    A = root[:, None] * vh[:rank]
    if left is not None:
        B = left @ B
    if right is not None:
        A = A @ right
    return A, B


def _check_rank(rank: int) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise InvalidArgument(f"rank must be a positive integer, got {rank!r}")
