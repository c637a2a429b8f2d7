"""Official PyTorch checkpoints, read without PyTorch, and copied into models by a name map.

:mod:`segzoo.checkpoints.torch_file` reads ``.pth`` files safely;
:mod:`segzoo.checkpoints.mapping` assigns a state dict through a family's name
map (``{official module path: Keras layer}``). Each family's map lives beside
its backbone (``segzoo/backbones/<family>_weights.py``); the conversion entry
points are in :mod:`segzoo.weights`. Nothing here imports the preset registry.
"""

from segzoo.checkpoints.mapping import assign_state, official_module_name, rename_mmseg, sublayer_paths
from segzoo.checkpoints.torch_file import CheckpointError, load_torch_checkpoint, read_state, state_dict

__all__ = ["CheckpointError", "assign_state", "load_torch_checkpoint", "official_module_name", "read_state",
           "rename_mmseg", "state_dict", "sublayer_paths"]
