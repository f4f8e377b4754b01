"""The symmetric-contraction kernels against the torch reference (GPU only)."""

from __future__ import annotations

import pytest
import torch

from mace_fast.irreps import Irreps
from mace_fast.nn.symmetric_contraction import SymmetricContraction

pytestmark = pytest.mark.gpu

CASES = {
    "l3_in_scalars_out_corr3": ("0e+1o+2e+3o", "32x0e", 3),
    "l3_in_l1_out_corr3": ("0e+1o+2e+3o", "32x0e+32x1o", 3),
    "l3_in_l2_out_corr3": ("0e+1o+2e+3o", "16x0e+16x1o+16x2e", 3),
    "l2_in_l1_out_corr2": ("0e+1o+2e", "24x0e+24x1o", 2),
}


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("component_major", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", sorted(CASES))
def test_kernel_matches_reference(case, dtype, component_major):
    irreps_in, irreps_out, corr = CASES[case]
    num_elements = 3
    sc = SymmetricContraction(Irreps(irreps_in), Irreps(irreps_out), corr, num_elements).double().cuda()
    c = sc.num_channels
    x = torch.randn(77, c, Irreps(irreps_in).dim, dtype=torch.float64, device="cuda", requires_grad=True)
    element = torch.randint(0, num_elements, (77,), device="cuda")
    ref = sc(x, element)
    g = torch.randn_like(ref)
    (ref_grad,) = torch.autograd.grad(ref, x, g)
    fast = sc.to(dtype)
    xin = x.detach().to(dtype)
    if component_major:  # [N, C, D] viewed from a contiguous [D, N, C], as the CUDA path gives it
        xin = xin.permute(2, 0, 1).contiguous().permute(1, 2, 0)
    xin.requires_grad_(True)
    out = fast(xin, element, use_kernels=True)
    (grad,) = torch.autograd.grad(out, xin, g.to(dtype))
    assert grad.stride() == xin.stride()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert rel(out, ref) < tol and rel(grad, ref_grad) < tol
    assert torch.equal(out, fast(xin, element, use_kernels=True))
