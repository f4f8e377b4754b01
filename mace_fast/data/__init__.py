"""Data: reading reference structures, neighbour lists, graphs and batches."""

from .configuration import Configuration, DataKeys, configuration_from_atoms, read_configurations
from .errors import InputError
from .graph import ElementTable, batch_from_atoms, build_graph, collate, graph_from_configuration
from .neighbours import neighbour_list

__all__ = [
    "Configuration",
    "DataKeys",
    "ElementTable",
    "InputError",
    "batch_from_atoms",
    "build_graph",
    "collate",
    "configuration_from_atoms",
    "graph_from_configuration",
    "neighbour_list",
    "read_configurations",
]
