"""Structure relaxation and molecular dynamics through ASE (CPU path).

:func:`relax_structures` relaxes many structures, reporting the failures instead of
stopping; :func:`run_md` runs one MD trajectory with logging, trajectory and plot.
"""

from .dynamics import ENSEMBLES, MDResult, run_md
from .relax import OPTIMIZERS, RelaxResult, check_structure, relax_structures

__all__ = ["ENSEMBLES", "MDResult", "run_md", "OPTIMIZERS", "RelaxResult", "check_structure", "relax_structures"]
