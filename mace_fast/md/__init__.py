"""Structure relaxation and molecular dynamics.

:func:`relax_batch` relaxes many structures together (batched FIRE, one model call per
step for the whole batch); :func:`relax_structures` relaxes them one by one with an ASE
optimizer. Both report failures instead of stopping. :func:`run_md` runs one MD
trajectory through ASE with logging, trajectory and plot.
"""

from .batch_relax import FireParameters, relax_batch
from .dynamics import ENSEMBLES, MDResult, run_md
from .relax import OPTIMIZERS, RelaxResult, check_structure, relax_structures

__all__ = ["FireParameters", "relax_batch", "ENSEMBLES", "MDResult", "run_md", "OPTIMIZERS", "RelaxResult", "check_structure", "relax_structures"]
