"""Low-rank algebra for LoRA factors (torch; imported only by code that needs it).

A LoRA module is a pair of factors ``B [out, k]`` and ``A [k, in]`` whose
product ``B @ A`` is the weight delta (convolutions: ``A [k, in, kh, kw]``,
``B [out, k, 1, 1]``; the delta is then ``B @ A.flatten(1)`` reshaped). The
functions here work on the matrix view and never materialise a full delta when
the factors suffice:

- :func:`truncate` re-factors ``B @ A`` at a lower rank with the SVD of a
  ``k x k`` core (QR of both factors), which is exact and cheap even for
  SD 1.5 sized modules. The relative Frobenius error comes from the discarded
  singular values.
- :func:`svd_factor` factors a full delta matrix (used by TIES/DARE, whose
  element-wise operations need the full delta).
- :func:`loha_factors`, :func:`lokr_factors` and :func:`tucker_factors` turn
  LyCORIS modules into *exact* LoRA factors (Khatri-Rao / Kronecker structure),
  so converting them costs only the final :func:`truncate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

Tensor = torch.Tensor


@dataclass
class Factored:
    """``B @ A`` in matrix form plus the shape to give ``A`` back (``None``: linear)."""

    B: Tensor  # [out, k]
    A: Tensor  # [k, in * kh * kw]
    kernel: tuple[int, ...] | None = None  # (in, kh, kw) of a convolution

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])

    @property
    def out_features(self) -> int:
        return int(self.B.shape[0])

    def delta(self) -> Tensor:
        """The full delta as a matrix ``[out, in*kh*kw]``."""
        return self.B @ self.A

    def weights(self) -> tuple[Tensor, Tensor]:
        """``(A, B)`` in the layout of a LoRA module (conv factors get their 4-D shapes back)."""
        if self.kernel is None:
            return self.A.contiguous(), self.B.contiguous()
        a = self.A.reshape(self.rank, *self.kernel).contiguous()
        b = self.B.reshape(self.out_features, self.rank, 1, 1).contiguous()
        return a, b

    def scaled(self, w: float) -> Factored:
        return Factored(self.B * w, self.A, self.kernel)

    def padded(self, rank: int) -> Factored:
        """Zero-pad to ``rank`` (the product does not change)."""
        k = self.rank
        if k >= rank:
            return self
        B = torch.zeros(self.B.shape[0], rank, dtype=self.B.dtype, device=self.B.device)
        A = torch.zeros(rank, self.A.shape[1], dtype=self.A.dtype, device=self.A.device)
        B[:, :k] = self.B
        A[:k] = self.A
        return Factored(B, A, self.kernel)


def from_lora(down: Tensor, up: Tensor, scale: float = 1.0) -> Factored:
    """Factors from LoRA ``down`` ([k, in] or [k, in, kh, kw]) and ``up`` ([out, k] or [out, k, 1, 1])."""
    down = down.float()
    up = up.float()
    kernel = tuple(int(d) for d in down.shape[1:]) if down.ndim == 4 else None
    if up.ndim == 4 and (up.shape[2] != 1 or up.shape[3] != 1):
        raise ValueError(f"LoRA up weight with a {tuple(up.shape[2:])} kernel is not supported")
    A = down.reshape(down.shape[0], -1)
    B = up.reshape(up.shape[0], -1)
    if B.shape[1] != A.shape[0]:
        raise ValueError(f"inconsistent LoRA factors: up {tuple(up.shape)}, down {tuple(down.shape)}")
    return Factored(B * float(scale), A, kernel)


def _balanced(U: Tensor, S: Tensor, Vh: Tensor) -> tuple[Tensor, Tensor]:
    root = S.sqrt()
    return U * root, root[:, None] * Vh


def truncate(f: Factored, rank: int, *, force: bool = False) -> tuple[Factored, float, float]:
    """Re-factor ``f`` at rank at most ``rank``.

    Returns ``(factors, relative_error, norm)``: ``relative_error`` is
    ``||BA - B'A'||_F / ||BA||_F`` (0 when nothing was dropped) and ``norm``
    is ``||BA||_F``. When ``f.rank <= rank`` the factors are returned as they are
    unless ``force`` (then they are re-orthogonalised: balanced SVD factors).
    """
    if rank < 1:
        raise ValueError("rank must be at least 1")
    B, A = f.B.float(), f.A.float()
    if f.rank <= rank and not force:
        return f, 0.0, factored_norm(B, A)
    # QR of both factors reduces the SVD of B @ A to that of a small core.
    Qb, Rb = torch.linalg.qr(B, mode="reduced")
    Qa, Ra = torch.linalg.qr(A.T, mode="reduced")
    core = Rb @ Ra.T
    U, S, Vh = torch.linalg.svd(core, full_matrices=False)
    total = float(torch.linalg.vector_norm(S))
    keep = min(rank, S.shape[0])
    dropped = float(torch.linalg.vector_norm(S[keep:]))
    Bu, Av = _balanced(U[:, :keep], S[:keep], Vh[:keep])
    out = Factored(Qb @ Bu, Av @ Qa.T, f.kernel)
    return out, (dropped / total if total > 0 else 0.0), total


def factored_norm(B: Tensor, A: Tensor) -> float:
    """``||B @ A||_F`` from two ``k x k`` Gram matrices (no full product)."""
    sq = float(((B.T @ B) * (A @ A.T)).sum())
    return math.sqrt(max(sq, 0.0))


def svd_factor(delta: Tensor, rank: int, kernel: tuple[int, ...] | None = None) -> tuple[Factored, float, float]:
    """Factor a full delta matrix ``[out, in*kh*kw]`` at rank ``rank`` by SVD.

    Returns ``(factors, relative_error, norm)``.
    """
    M = delta.float()
    total = float(torch.linalg.matrix_norm(M))
    if total == 0.0:
        z = Factored(torch.zeros(M.shape[0], 1), torch.zeros(1, M.shape[1]), kernel)
        return z, 0.0, 0.0
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    keep = max(1, min(rank, S.shape[0]))
    dropped = float(torch.linalg.vector_norm(S[keep:]))
    Bu, Av = _balanced(U[:, :keep], S[:keep], Vh[:keep])
    return Factored(Bu, Av, kernel), dropped / total, total


def exact_factors(M: Tensor, tol: float = 1e-7) -> tuple[Tensor, Tensor]:
    """``U, V`` with ``U @ V == M`` and as few columns as the numerical rank needs."""
    U, S, Vh = torch.linalg.svd(M.float(), full_matrices=False)
    if S.numel() == 0 or float(S[0]) == 0.0:
        return torch.zeros(M.shape[0], 1), torch.zeros(1, M.shape[1])
    keep = int((S > S[0] * tol).sum())
    return _balanced(U[:, :keep], S[:keep], Vh[:keep])


def loha_factors(w1a: Tensor, w1b: Tensor, w2a: Tensor, w2b: Tensor, scale: float, shape: tuple[int, ...] | None) -> Factored:
    """Exact factors of the LoHa delta ``((w1a @ w1b) * (w2a @ w2b)) * scale`` (Khatri-Rao products).

    ``shape`` is the module's weight shape for a convolution (``[out, in, kh, kw]``), else ``None``.
    """
    w1a, w1b, w2a, w2b = (t.float().reshape(t.shape[0], -1) for t in (w1a, w1b, w2a, w2b))
    out = w1a.shape[0]
    B = torch.einsum("ip,iq->ipq", w1a, w2a).reshape(out, -1)
    A = torch.einsum("pj,qj->pqj", w1b, w2b).reshape(B.shape[1], -1)
    kernel = tuple(int(d) for d in shape[1:]) if shape is not None and len(shape) == 4 else None
    return Factored(B * float(scale), A, kernel)


def lokr_factors(w1: Tensor, w2: Tensor, scale: float, w1_factors: tuple[Tensor, Tensor] | None = None,
                 w2_factors: tuple[Tensor, Tensor] | None = None) -> Factored:
    """Exact factors of the LoKr delta ``kron(w1, w2) * scale``.

    ``w1`` is ``[o1, i1]``; ``w2`` is ``[o2, i2]`` or a convolution ``[o2, i2, kh, kw]``.
    Pass the stored factors (``lokr_w*_a``, ``lokr_w*_b``) when the file has them;
    full matrices are factored by SVD at their numerical rank. The Kronecker
    product of two factorisations is a factorisation of the Kronecker product,
    so the result is exact with rank ``rank(w1) * rank(w2)``.
    """
    U1, V1 = w1_factors if w1_factors is not None else exact_factors(w1)
    U1, V1 = U1.float(), V1.float()
    w2_shape = tuple(int(d) for d in (w2.shape if w2 is not None else ()))
    if w2_factors is not None:
        U2, V2 = (t.float() for t in w2_factors)
        V2 = V2.reshape(V2.shape[0], -1)
    else:
        U2, V2 = exact_factors(w2.float().reshape(w2.shape[0], -1))
    k1, i1 = V1.shape
    k2 = V2.shape[0]
    U2 = U2.reshape(U2.shape[0], -1)
    # kron(U1, U2) as an outer product: torch.kron fails ("view size is not compatible") on a one-column U1
    # whose strides are (1, rows), which exact_factors returns for a LoKr w1 of shape [n, 1]
    B = (U1[:, None, :, None] * U2[None, :, None, :]).reshape(U1.shape[0] * U2.shape[0], U1.shape[1] * U2.shape[1])
    if len(w2_shape) == 4:
        i2 = w2_shape[1]
        spatial = w2_shape[2] * w2_shape[3]
        kernel: tuple[int, ...] | None = (i1 * i2, w2_shape[2], w2_shape[3])
    elif w2_factors is not None and len(w2_factors[1].shape) == 4:
        i2 = int(w2_factors[1].shape[1])
        spatial = int(w2_factors[1].shape[2] * w2_factors[1].shape[3])
        kernel = (i1 * i2, int(w2_factors[1].shape[2]), int(w2_factors[1].shape[3]))
    else:
        i2 = V2.shape[1]
        spatial = 1
        kernel = None
    A = torch.einsum("sb,tdx->stbdx", V1, V2.reshape(k2, i2, spatial).contiguous()).reshape(k1 * k2, -1)
    return Factored(B * float(scale), A, kernel)


def tucker_factors(up: Tensor, mid: Tensor, down: Tensor, scale: float) -> Factored:
    """Exact factors of a LoCon module with a Tucker core (``lora_mid``).

    ``up [out, r, 1, 1]``, ``mid [r, r, kh, kw]``, ``down [r, in, 1, 1]``:
    the delta is ``sum_pq up[o,p] mid[p,q,h,w] down[q,i]``, i.e. factors
    ``B = up`` and ``A[p, i, h, w] = sum_q mid[p,q,h,w] down[q,i]``.
    """
    B = up.float().reshape(up.shape[0], -1)
    d = down.float().reshape(down.shape[0], -1)
    A = torch.einsum("pqhw,qi->pihw", mid.float(), d)
    kernel = tuple(int(x) for x in A.shape[1:])
    return Factored(B * float(scale), A.reshape(A.shape[0], -1), kernel)


def concat(parts: list[Factored]) -> Factored:
    """``sum_i B_i @ A_i`` as one factorisation (``[B_1 | B_2 ...]``, ``[A_1; A_2 ...]``): exact."""
    if not parts:
        raise ValueError("nothing to concatenate")
    kernel = parts[0].kernel
    return Factored(torch.cat([p.B for p in parts], dim=1), torch.cat([p.A for p in parts], dim=0), kernel)


def relative_error(approx: Tensor, exact: Tensor) -> float:
    n = float(torch.linalg.matrix_norm(exact))
    return float(torch.linalg.matrix_norm(approx - exact)) / n if n > 0 else 0.0


def describe(t: Any) -> str:  # pragma: no cover - debugging aid
    return f"{type(t).__name__}{tuple(getattr(t, 'shape', ()))}"
