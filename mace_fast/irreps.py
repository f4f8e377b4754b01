"""Small immutable value types for O(3) irreducible representations.

An ``Irrep`` is a degree ``l`` and a parity ``p`` (+1 even, -1 odd); ``Irreps`` is an
ordered list of ``(mul, Irrep)`` blocks. Features are laid out block after block, and
inside a block channel-major: ``[mul, 2l+1]`` flattened (the "mul_ir" layout of e3nn and
mace-torch), so a converted model reads its features in the same order.

>>> Irreps("128x0e+128x1o").dim
512
>>> str(Irreps("2x1o+0e").sort())
'1x0e+2x1o'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, List, Sequence, Tuple, Union

__all__ = ["Irrep", "Irreps"]


@dataclass(frozen=True, order=True)
class Irrep:
    """Irreducible representation of O(3): degree ``l`` and parity ``p`` (+1 or -1)."""

    l: int
    p: int

    def __post_init__(self) -> None:
        if self.l < 0 or self.p not in (1, -1):
            raise ValueError(f"invalid irrep l={self.l} p={self.p}")

    @classmethod
    def parse(cls, text: str) -> "Irrep":
        m = re.fullmatch(r"\s*(\d+)([eo])\s*", text)
        if m is None:
            raise ValueError(f"cannot parse irrep {text!r}; expected e.g. '1o'")
        return cls(int(m.group(1)), 1 if m.group(2) == "e" else -1)

    @property
    def dim(self) -> int:
        return 2 * self.l + 1

    @property
    def sort_key(self) -> tuple:
        """e3nn's order: by l, then odd before even parity."""
        return (self.l, self.p)

    def __mul__(self, other: "Irrep") -> List["Irrep"]:
        """Irreps in the product of two irreps: |l1-l2| <= l <= l1+l2, parity p1*p2."""
        p = self.p * other.p
        return [Irrep(l, p) for l in range(abs(self.l - other.l), self.l + other.l + 1)]

    def __str__(self) -> str:
        return f"{self.l}{'e' if self.p == 1 else 'o'}"

    __repr__ = __str__


IrrepsLike = Union[str, "Irreps", Sequence[Tuple[int, Union[Irrep, Tuple[int, int]]]]]


class Irreps(tuple):
    """Ordered tuple of ``(mul, Irrep)`` blocks."""

    def __new__(cls, spec: IrrepsLike = ()) -> "Irreps":
        if isinstance(spec, Irreps):
            return spec
        blocks: List[Tuple[int, Irrep]] = []
        if isinstance(spec, str):
            for part in filter(None, (s.strip() for s in spec.split("+"))):
                m = re.fullmatch(r"(?:(\d+)x)?(\d+[eo])", part)
                if m is None:
                    raise ValueError(f"cannot parse irreps {spec!r} at {part!r}")
                blocks.append((int(m.group(1) or 1), Irrep.parse(m.group(2))))
        else:
            for mul, ir in spec:
                blocks.append((int(mul), ir if isinstance(ir, Irrep) else Irrep(*ir)))
        return super().__new__(cls, blocks)

    @classmethod
    def spherical_harmonics(cls, lmax: int) -> "Irreps":
        """``1x0e+1x1o+1x2e+...`` up to ``lmax`` (parity (-1)^l)."""
        return cls([(1, Irrep(l, (-1) ** l)) for l in range(lmax + 1)])

    @property
    def dim(self) -> int:
        return sum(mul * ir.dim for mul, ir in self)

    @property
    def lmax(self) -> int:
        return max(ir.l for _, ir in self)

    @property
    def num_irreps(self) -> int:
        return sum(mul for mul, _ in self)

    def count(self, ir: Union[Irrep, str]) -> int:  # type: ignore[override]
        ir = Irrep.parse(ir) if isinstance(ir, str) else ir
        return sum(mul for mul, i in self if i == ir)

    def __contains__(self, ir: object) -> bool:  # type: ignore[override]
        ir = Irrep.parse(ir) if isinstance(ir, str) else ir
        return any(i == ir for _, i in self)

    def slices(self) -> List[slice]:
        """Slice of each block in the flat feature vector."""
        out, start = [], 0
        for mul, ir in self:
            out.append(slice(start, start + mul * ir.dim))
            start += mul * ir.dim
        return out

    def sort(self) -> "Irreps":
        """Blocks sorted by (l, parity) as e3nn sorts them (stable)."""
        return Irreps(sorted(self, key=lambda b: b[1].sort_key))

    def simplify(self) -> "Irreps":
        """Merge neighbouring blocks of the same irrep."""
        out: List[Tuple[int, Irrep]] = []
        for mul, ir in self:
            if out and out[-1][1] == ir:
                out[-1] = (out[-1][0] + mul, ir)
            elif mul > 0:
                out.append((mul, ir))
        return Irreps(out)

    def __add__(self, other: IrrepsLike) -> "Irreps":  # type: ignore[override]
        return Irreps(list(self) + list(Irreps(other)))

    def __iter__(self) -> Iterator[Tuple[int, Irrep]]:
        return super().__iter__()

    def __str__(self) -> str:
        return "+".join(f"{mul}x{ir}" for mul, ir in self)

    def __repr__(self) -> str:
        return f"Irreps('{self}')"
