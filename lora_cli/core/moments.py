"""A regression data set's float64 sufficient statistics, computed once and shared.

Every linear fit's loss on (X, Y) is a function of XᵀX, XᵀY, ‖Y‖² and the count, so the
optima of every stage and every sweep trial, and the batched engine's full-data losses, read
these instead of the n x d data. They are accumulated over row blocks (never a float64 copy
of all of X) from the float32 data, whose products are exact in float64.

For a frozen base W, the residual R = Y − X·Wᵀ has XᵀR = XᵀY − XᵀX·Wᵀ and
‖R‖² = ‖Y‖² − 2⟨W, (XᵀY)ᵀ⟩ + ⟨W·XᵀX, W⟩: two d_in² x d_out products, against n·d_in·d_out
for forming R.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BLOCK_ROWS = 1024  # rows converted to float64 at a time: 1024 x (d_in + d_out) x 8 bytes


@dataclass(frozen=True)
class Moments:
    """XᵀX (d_in, d_in), XᵀY (d_in, d_out) and ‖Y‖², float64, of `count` rows."""

    xtx: torch.Tensor
    xty: torch.Tensor
    yy: float
    count: int  # rows n

    @classmethod
    def of(cls, x: torch.Tensor, y: torch.Tensor, block: int = BLOCK_ROWS) -> Moments:
        """The moments of (x (n, d_in), y (n, d_out)), accumulated `block` rows at a time."""
        d_in, d_out = x.shape[1], y.shape[1]
        both = torch.zeros(d_in, d_in + d_out, dtype=torch.float64, device=x.device)  # [XᵀX | XᵀY]: one product a block
        yy = torch.zeros((), dtype=torch.float64, device=x.device)
        for start in range(0, x.shape[0], block):
            rows = torch.cat([x[start : start + block], y[start : start + block]], dim=1).double()
            both.addmm_(rows[:, :d_in].T, rows)
            yy += rows[:, d_in:].square().sum()
        xtx, xty = both[:, :d_in].contiguous(), both[:, d_in:].contiguous()
        return cls(xtx, xty, yy.item(), x.shape[0])

    @property
    def d_out(self) -> int:
        return self.xty.shape[1]

    def residual(self, w: torch.Tensor | None = None) -> Residual:
        """The moments of R = Y − X·Wᵀ for a frozen W (d_out, d_in); None: R = Y."""
        if w is None:
            return Residual(self.xtx, self.xty, self.yy, self.count * self.d_out)
        w64 = w.double().to(self.xtx.device)
        gw = self.xtx @ w64.T  # XᵀX·Wᵀ (d_in, d_out)
        xtr = self.xty - gw
        rr = self.yy - 2 * (w64.T * self.xty).sum().item() + (w64.T * gw).sum().item()
        return Residual(self.xtx, xtr, max(rr, 0.0), self.count * self.d_out)


@dataclass(frozen=True)
class Residual:
    """What an update fits, as moments: XᵀX, XᵀR and ‖R‖² of R (n, d_out), with numel = n·d_out."""

    xtx: torch.Tensor
    xtr: torch.Tensor
    rr: float
    numel: int

    def projected(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """QᵀR (d, d_out) for Q an orthonormal basis of the columns of X (of X·rowsᵀ when
        `rows` (r, d_in) is given): ‖QᵀR‖² is what a least-squares fit explains. From
        L⁻¹·XᵀR with L = chol(XᵀX); an eigenbasis of XᵀX where it is singular."""
        gram, cross = self.xtx, self.xtr
        if rows is not None:
            r64 = rows.double().to(gram.device)
            gram, cross = r64 @ gram @ r64.T, r64 @ cross
        chol, info = torch.linalg.cholesky_ex(gram)
        if info.item() == 0:
            return torch.linalg.solve_triangular(chol, cross, upper=False)
        values, vectors = torch.linalg.eigh(gram)  # XᵀX = V·Λ·Vᵀ: Q = X·V·Λ^(-1/2) on Λ > 0
        kept = values > values.max() * gram.shape[0] * torch.finfo(torch.float64).eps
        return (vectors[:, kept].T @ cross) / values[kept].sqrt()[:, None]

    def floors(self, ranks: list[int | None], rows: torch.Tensor | None = None) -> list[float]:
        """min over M of rank ≤ r (None: any) of MSE(X·Mᵀ, R) for each r, from one projection
        and one eigendecomposition: reduced-rank regression.

        With X = Q·T (Q orthonormal columns), ‖R − X·Mᵀ‖² = ‖R‖² − ‖QᵀR‖² + ‖QᵀR − T·Mᵀ‖², and
        T·Mᵀ ranges over every matrix of rank ≤ r, so the floor is (‖R‖² − Σ_{i≤r} σᵢ(QᵀR)²)/numel.
        """
        projected = self.projected(rows)
        low = [r for r in ranks if r is not None and r < min(projected.shape)]
        energy = None
        if low:  # σᵢ(QᵀR)², largest first: eigenvalues of the smaller Gram matrix of QᵀR
            small = projected @ projected.T if projected.shape[0] <= projected.shape[1] else projected.T @ projected
            energy = torch.linalg.eigvalsh(small).flip(0).clamp(min=0)
        explained_all = projected.square().sum().item()
        out = []
        for rank in ranks:
            explained = explained_all if rank is None or rank >= min(projected.shape) else energy[:rank].sum().item()
            out.append(max(self.rr - explained, 0.0) / self.numel)
        return out

    def gradient(self) -> torch.Tensor:
        """∇_W of MSE(X·Wᵀ, y) at the frozen W the residual is of: −(2/numel)·(XᵀR)ᵀ, (d_out, d_in), float64."""
        return -2.0 / self.numel * self.xtr.T

    def floor_in_columns(self, columns: torch.Tensor) -> float:
        """min over M (d_in, r) of MSE(X·M·Cᵀ, R) for fixed `columns` C (d_out, r): with Q an
        orthonormal basis of C's span, ‖R − X·M·Qᵀ‖² = ‖R·(I − QQᵀ)‖² + ‖R·Q − X·M‖², so the
        floor is (‖R‖² − ‖Q_Xᵀ·R·Q‖²)/numel, Q_X an orthonormal basis of X's columns."""
        basis = _span(columns.double().to(self.xtr.device))
        return max(self.rr - (self.projected() @ basis).square().sum().item(), 0.0) / self.numel


def _span(columns: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis (d, k) of the columns' span, dependent columns dropped."""
    u, sigma, _ = torch.linalg.svd(columns, full_matrices=False)
    return u[:, sigma > sigma.max() * max(columns.shape) * torch.finfo(torch.float64).eps]
