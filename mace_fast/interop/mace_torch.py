"""Conversion of mace-torch models into mace_fast models (needs the optional mace-torch).

mace-torch saves models as pickled ``torch.nn.Module`` objects; reading one runs code from
the file, so only convert files you trust. The converted model is the same function:
weights are copied one to one, except in the product basis, where mace_fast uses its own
orthonormal coupling basis and the weights are mapped onto it by an exact change of basis
(checked to round-off).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Dict, List, Optional, Union

import torch

from ..config import ModelConfig
from ..irreps import Irreps
from ..model import MACE
from ..nn.coupling_basis import symmetric_coupling_basis

__all__ = ["ConversionError", "config_from_mace", "convert_mace_model", "load_mace_torch_model"]

SUPPORTED_CLASSES = ("MACE", "ScaleShiftMACE")


class ConversionError(ValueError):
    """The mace-torch model uses a feature mace_fast does not reproduce."""


def load_mace_torch_model(path: Union[str, Path]) -> torch.nn.Module:
    """Unpickle a mace-torch model file (runs code from the file: trust it)."""
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    try:
        import mace  # noqa: F401  (the pickle refers to mace classes)
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("converting a mace-torch model needs mace-torch: pip install 'mace-fast[mace]'") from err
    model = torch.load(Path(path), map_location="cpu", weights_only=False)
    if not isinstance(model, torch.nn.Module):
        raise ConversionError(f"{path} does not hold a torch.nn.Module but a {type(model).__name__}")
    return model


def _act_name(fn) -> Optional[str]:
    if fn is None:
        return None
    f = getattr(fn, "f", fn)
    if f is torch.nn.functional.silu or isinstance(f, torch.nn.SiLU):
        return "silu"
    if f is torch.tanh or isinstance(f, torch.nn.Tanh):
        return "tanh"
    raise ConversionError(f"unsupported activation {f!r}")


def _act_scale(fn) -> Optional[float]:
    if fn is None or getattr(fn, "_is_id", False):
        return 1.0 if fn is not None else None
    return float(fn.cst)


def config_from_mace(model: torch.nn.Module) -> ModelConfig:
    """Read a mace-torch model's hyperparameters into a :class:`ModelConfig`."""
    name = type(model).__name__
    if name not in SUPPORTED_CLASSES:
        raise ConversionError(f"model class {name} is not supported (supported: {', '.join(SUPPORTED_CLASSES)})")
    heads = getattr(model, "heads", ["Default"]) or ["Default"]
    if len(heads) != 1:
        raise ConversionError(f"multi-head models are not supported yet (heads: {heads})")
    for attr in ("joint_embedding", "embedding_readout"):
        if hasattr(model, attr):
            raise ConversionError(f"models with {attr} are not supported")
    if getattr(model, "use_agnostic_product", False) or getattr(model, "use_so3", False):
        raise ConversionError("use_agnostic_product / use_so3 models are not supported")
    if getattr(model, "use_last_readout_only", False):
        raise ConversionError("use_last_readout_only models are not supported")
    radial = model.radial_embedding
    if type(radial.bessel_fn).__name__ != "BesselBasis":
        raise ConversionError(f"radial basis {type(radial.bessel_fn).__name__} is not supported (Bessel only)")
    transform = "None"
    if hasattr(radial, "distance_transform"):
        transform = {"AgnesiTransform": "Agnesi", "SoftTransform": "Soft"}.get(type(radial.distance_transform).__name__)
        if transform is None:
            raise ConversionError(f"distance transform {type(radial.distance_transform).__name__} is not supported")

    inter0 = model.interactions[0]
    for inter in model.interactions:
        if str(inter.edge_irreps) != str(inter.node_feats_irreps):
            raise ConversionError("models with edge_irreps different from the node features are not supported")
        if hasattr(inter, "conv_fusion"):
            raise ConversionError("cuEquivariance/OEQ-fused models: convert back to e3nn with mace-torch first")
    hidden = str(model.products[0].linear.irreps_out)
    if len(model.interactions) > 1:
        hidden = str(model.interactions[1].node_feats_irreps)
    energies = model.atomic_energies_fn.atomic_energies.detach().to(torch.float64)
    if energies.dim() == 2:
        energies = energies[0]
    scale, shift = 1.0, 0.0
    if hasattr(model, "scale_shift"):
        scale = float(torch.atleast_1d(model.scale_shift.scale)[0])
        shift = float(torch.atleast_1d(model.scale_shift.shift)[0])
    readout = model.readouts[-1]
    gate_fn = readout.non_linearity.acts[0] if hasattr(readout, "non_linearity") else None
    return ModelConfig(
        atomic_numbers=[int(z) for z in model.atomic_numbers],
        atomic_energies=[float(e) for e in energies],
        r_max=float(model.r_max),
        num_bessel=int(radial.bessel_fn.bessel_weights.numel()),
        num_polynomial_cutoff=int(radial.cutoff_fn.p),
        max_ell=int(model.spherical_harmonics.irreps_out.lmax),
        hidden_irreps=str(Irreps(hidden)),
        mlp_irreps=str(Irreps(str(readout.hidden_irreps))),
        num_interactions=len(model.interactions),
        correlation=[int(p.symmetric_contractions.contractions[0].correlation) for p in model.products],
        interaction=type(model.interactions[-1]).__name__,
        interaction_first=type(inter0).__name__,
        radial_mlp=[int(h) for h in inter0.conv_tp_weights.hs[1:-1]],
        gate=_act_name(gate_fn),
        avg_num_neighbors=float(inter0.avg_num_neighbors),
        scale=scale,
        shift=shift,
        pair_repulsion=hasattr(model, "pair_repulsion"),
        distance_transform=transform,
        apply_cutoff=bool(getattr(model, "apply_cutoff", True)),
        radial_act_scale=_act_scale(inter0.conv_tp_weights.layer0.act),
        readout_act_scale=_act_scale(gate_fn),
    )


def _linear_blocks(lin) -> List[torch.Tensor]:
    """e3nn ``o3.Linear`` -> one ``[fan_in, mul_out]`` weight per output block (inputs in order)."""
    per_out: Dict[int, List] = {k: [] for k in range(len(lin.irreps_out))}
    for _, ins, w in lin.weight_views(yield_instruction=True):
        per_out[ins.i_out].append((ins.i_in, w.detach()))
    blocks = []
    for k, (mul_out, _) in enumerate(lin.irreps_out):
        parts = [w for _, w in sorted(per_out[k], key=lambda t: t[0])]
        blocks.append(torch.cat(parts, dim=0) if parts else torch.zeros(0, mul_out, dtype=lin.weight.dtype))
    return blocks


def _skip_blocks(tp) -> List[torch.Tensor]:
    """e3nn ``FullyConnectedTensorProduct`` with one-hot elements -> ``[Z, fan_in, mul_out]`` per output."""
    per_out: Dict[int, List] = {k: [] for k in range(len(tp.irreps_out))}
    for _, ins, w in tp.weight_views(yield_instruction=True):
        per_out[ins.i_out].append((ins.i_in1, w.detach().permute(1, 0, 2)))
    num_elements = tp.irreps_in2.num_irreps
    blocks = []
    for k, (mul_out, _) in enumerate(tp.irreps_out):
        parts = [w for _, w in sorted(per_out[k], key=lambda t: t[0])]
        empty = torch.zeros(num_elements, 0, mul_out, dtype=tp.weight.dtype)
        blocks.append(torch.cat(parts, dim=1) if parts else empty)
    return blocks


def _symmetrise(u: torch.Tensor, degree: int) -> torch.Tensor:
    """Average ``[M, D.. (degree), K]`` over permutations of the D axes."""
    perms = list(itertools.permutations(range(1, degree + 1)))
    return sum(u.permute((0,) + p + (degree + 1,)) for p in perms) / len(perms)


def _contraction_weights(contraction, irreps_in: Irreps, ir, num_channels: int) -> List[torch.Tensor]:
    """Weights of one mace-torch ``Contraction`` mapped onto mace_fast's basis, per degree."""
    corr = contraction.correlation
    theirs = {corr: contraction.weights_max}
    for j, w in enumerate(contraction.weights):
        theirs[corr - 1 - j] = w
    out = []
    for degree in range(1, corr + 1):
        stored = getattr(contraction, f"U_matrix_{degree}").detach()
        # A model built in float32 stores its basis rounded to float32 (~1e-8 relative); the
        # exact basis is then what that rounding approximates, so allow for it.
        tolerance = 1e-9 if stored.dtype == torch.float64 else 1e-6
        u_theirs = stored.to(torch.float64)
        if ir.l == 0:
            u_theirs = u_theirs.unsqueeze(0)
        u_theirs = _symmetrise(u_theirs, degree)
        ours = symmetric_coupling_basis(irreps_in, ir, degree, dtype=torch.float64)
        a = ours.reshape(-1, ours.shape[-1])
        b = u_theirs.reshape(-1, u_theirs.shape[-1])
        change = a.T @ b  # ours is orthonormal: least-squares coefficients
        residual = (a @ change - b).norm() / max(b.norm().item(), 1e-300)
        if residual > tolerance:
            raise ConversionError(
                f"product basis for {ir} degree {degree} is not spanned by mace_fast's basis (residual {residual:.2e})"
            )
        w = theirs[degree].detach().to(torch.float64)  # [Z, K_theirs, C]
        out.append(torch.einsum("ab,zbc->zac", change, w))
    return out


def convert_mace_model(source: Union[torch.nn.Module, str, Path]) -> MACE:
    """A mace_fast :class:`MACE` computing the same function as a mace-torch model.

    The result has the source's dtype. ``source`` is a module or a path to a pickled one.
    """
    model = load_mace_torch_model(source) if isinstance(source, (str, Path)) else source
    config = config_from_mace(model)
    dtype = next(model.parameters()).dtype
    ours = MACE(config).to(dtype)
    sd: Dict[str, torch.Tensor] = {}
    sd["node_embedding.weight"] = model.node_embedding.linear.weight.detach().reshape(
        len(config.atomic_numbers), config.num_channels
    )
    sd["atomic_energies"] = torch.tensor(config.atomic_energies, dtype=torch.float64)
    for i, (inter, prod, readout) in enumerate(zip(model.interactions, model.products, model.readouts)):
        mine = ours.interactions[i]
        if [(p.i_in1, p.i_sh, p.i_out) for p in mine.conv_tp.paths] != [
            (ins.i_in1, ins.i_in2, ins.i_out) for ins in inter.conv_tp.instructions
        ]:
            raise ConversionError(f"interaction {i}: tensor-product paths differ from mace-torch's")
        for name in ("linear_up", "linear"):
            for k, w in enumerate(_linear_blocks(getattr(inter, name))):
                sd[f"interactions.{i}.{name}.weights.{k}"] = w
        for j in range(len(mine.radial_mlp.layers)):
            sd[f"interactions.{i}.radial_mlp.layers.{j}"] = getattr(inter.conv_tp_weights, f"layer{j}").weight.detach()
        for k, w in enumerate(_skip_blocks(inter.skip_tp)):
            sd[f"interactions.{i}.skip.weights.{k}"] = w
        if mine.density:
            sd[f"interactions.{i}.density_mlp.layers.0"] = inter.density_fn.layer0.weight.detach()
        sc = ours.products[i].symmetric_contraction
        for b, (mul, ir) in enumerate(sc.irreps_out):
            ws = _contraction_weights(prod.symmetric_contractions.contractions[b], sc.irreps_in, ir, mul)
            for degree, w in enumerate(ws, start=1):
                sd[f"products.{i}.symmetric_contraction.weights.{b * sc.correlation + degree - 1}"] = w
        for k, w in enumerate(_linear_blocks(prod.linear)):
            sd[f"products.{i}.linear.weights.{k}"] = w
        if hasattr(readout, "linear_1"):
            for name in ("linear_1", "linear_2"):
                for k, w in enumerate(_linear_blocks(getattr(readout, name))):
                    sd[f"readouts.{i}.{name}.weights.{k}"] = w
        else:
            for k, w in enumerate(_linear_blocks(readout.linear)):
                sd[f"readouts.{i}.linear.weights.{k}"] = w
    # The Bessel frequencies and prefactor are stored in the source's dtype: copy them, so
    # that a model built in float32 is reproduced with its own rounded constants.
    bessel = model.radial_embedding.bessel_fn
    sd["radial_embedding.bessel.bessel_weights"] = bessel.bessel_weights.detach().reshape(-1)
    sd["radial_embedding.bessel.prefactor"] = bessel.prefactor.detach().reshape(())
    if config.pair_repulsion:
        for name in ("c", "a_exp", "a_prefactor"):
            sd[f"pair_repulsion.{name}"] = getattr(model.pair_repulsion_fn, name).detach()
    transform = getattr(model.radial_embedding, "distance_transform", None)
    if transform is not None:
        for name in ("q", "p", "a", "alpha"):
            if hasattr(ours.radial_embedding.transform, name):
                sd[f"radial_embedding.transform.{name}"] = getattr(transform, name).detach().reshape(())
    state = ours.state_dict()
    missing = sorted(k for k in state if k not in sd and not _derived(k))
    if missing:
        raise ConversionError(f"no mace-torch weights for {missing}")
    for k, v in sd.items():
        if k not in state:
            raise ConversionError(f"internal: {k} is not a mace_fast weight")
        if state[k].shape != v.shape:
            raise ConversionError(f"{k}: shape {tuple(v.shape)} from mace-torch, {tuple(state[k].shape)} expected")
        state[k] = v.to(state[k].dtype)
    ours.load_state_dict(state)
    ours.eval()
    return ours


def _derived(key: str) -> bool:
    """Buffers fixed by the config (not read from the source model)."""
    return key.split(".")[-1] in ("r_max", "covalent_radii", "scale", "shift") or (
        key.startswith("pair_repulsion.") or key.startswith("radial_embedding.transform.")
    )
