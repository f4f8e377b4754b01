"""Keys of the batch dictionary: the data contract between data/, the model and the kernels.

A batch is one ``Dict[str, Tensor]`` holding ``G`` graphs with ``N`` atoms and ``E``
directed edges in total. Edges point from ``sender`` to ``receiver``; the edge vector is
``positions[receiver] - positions[sender] + shifts``. Edges are sorted by receiver, and
``edge_ptr`` is the CSR row pointer over receivers, so aggregation onto atoms is a segment
reduction (the CUDA kernels rely on it).
"""

POSITIONS = "positions"  # [N, 3] float, Cartesian, Angstrom
ATOMIC_NUMBERS = "atomic_numbers"  # [N] int64
ELEMENT_INDEX = "element_index"  # [N] int64, index into the model's element table
EDGE_INDEX = "edge_index"  # [2, E] int64: row 0 sender, row 1 receiver
EDGE_PTR = "edge_ptr"  # [N+1] int64: edges of receiver i are edge_ptr[i]:edge_ptr[i+1]
UNIT_SHIFTS = "unit_shifts"  # [E, 3] float: integer lattice images of the sender
SHIFTS = "shifts"  # [E, 3] float: unit_shifts @ cell, Angstrom
# [G, 3, 3] float, rows are lattice vectors: the caller's cell unchanged (zeros when there is
# none). Rows of non-periodic directions are kept but do not enter the geometry, because their
# shifts are zero; they do enter the cell volume that divides the stress.
CELL = "cell"
PBC = "pbc"  # [G, 3] bool
BATCH = "batch"  # [N] int64: graph of each atom
PTR = "ptr"  # [G+1] int64: atoms of graph g are ptr[g]:ptr[g+1]

# Reference labels (training and evaluation), present only when the data has them.
ENERGY = "energy"  # [G] float, eV
FORCES = "forces"  # [N, 3] float, eV/Angstrom
STRESS = "stress"  # [G, 3, 3] float, eV/Angstrom^3, ASE sign convention
VIRIALS = "virials"  # [G, 3, 3] float, eV
WEIGHT = "weight"  # [G] float: per-configuration loss weight
ENERGY_WEIGHT = "energy_weight"  # [G] float: 0 where the frame has no energy
FORCES_WEIGHT = "forces_weight"  # [G] float
STRESS_WEIGHT = "stress_weight"  # [G] float
VIRIALS_WEIGHT = "virials_weight"  # [G] float

# Model outputs.
NODE_ENERGY = "node_energy"  # [N] float: per-atom energies (E0 + interaction)
INTERACTION_ENERGY = "interaction_energy"  # [G] float: energy without the E0s
DISPLACEMENT = "displacement"  # [G, 3, 3] float: strain the stress is taken against
