"""
The seam between each method's network (exported) and its post-processing (eager).

A method's network is its backbone plus the heads that read the backbone's features with one
call per forward (:data:`NETWORK_HEADS`). :class:`DeployNetwork` runs exactly those modules, as
the method's own inference calls them, and returns their outputs as a flat tuple of tensors. At
run time (:mod:`panoptic_zoo.deploy.runtime`) the same modules of the eager model answer with the
exported network's outputs instead (:func:`serve_network_outputs`), so the method's unchanged
``forward`` does everything else: preprocessing, proposals and ROI heads where there are any,
and post-processing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn
from torch.utils import _pytree as pytree

__all__ = [
    "NETWORK_HEADS",
    "DeployNetwork",
    "network_parts",
    "serve_network_outputs",
]

# Per meta-architecture: whether backbone features go out (only where post-processing reads
# them: the ROI heads of the two-stage methods), and the heads as (module path, the method of it
# that inference calls, its arguments from the model and the features), in the order the
# method's inference calls them.
NETWORK_HEADS: dict[str, tuple[bool, tuple[tuple[str, str, Callable], ...]]] = {
    "PanopticFPN": (True, (
        # The layers only: the head's own forward then upsamples the logits (post-processing).
        ("sem_seg_head", "layers", lambda model, features: (features,)),
        ("proposal_generator.rpn_head", "forward",
         lambda model, features: ([features[f] for f in model.proposal_generator.in_features],)),
    )),
    "UPSNet": (True, (
        ("semantic_head", "forward", lambda model, features: (features,)),
        ("proposal_generator.rpn_head", "forward",
         lambda model, features: ([features[f] for f in model.proposal_generator.in_features],)),
    )),
    "PanopticDeepLabModel": (False, (
        ("ins_embed_head", "forward", lambda model, features: (features,)),
        ("sem_seg_head", "forward", lambda model, features: (features,)),
    )),
    "PanopticFCN": (False, (
        ("kernel_generator", "forward",
         lambda model, features: ([features[f] for f in model.kernel_features],)),
        ("feature_encoder", "forward", lambda model, features: (features,)),
    )),
    # The last prediction only, as inference asks for it.
    "Mask2Former": (False, (
        ("head", "forward", lambda model, features: (features, False)),
    )),
}  # fmt: skip


def network_parts(model: nn.Module) -> tuple[bool, tuple[tuple[str, str, Callable], ...]]:
    """``(exports_features, heads)`` of ``model``'s meta-architecture; a clear error otherwise."""
    name = type(model).__name__
    if name not in NETWORK_HEADS:
        raise ValueError(
            f"no deployment seam for meta-architecture {name}; known: {sorted(NETWORK_HEADS)} "
            "(panoptic_zoo/deploy/network.py, NETWORK_HEADS)"
        )
    return NETWORK_HEADS[name]


class DeployNetwork(nn.Module):
    """
    ``model``'s backbone and heads: a normalized, padded image batch (N, 3, H, W) in, the flat
    tuple of their output tensors out (backbone features first where exported, then each head's
    outputs). :attr:`spec` says how to rebuild the structures the modules returned.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.exports_features, self.heads = network_parts(model)
        # Only the exported modules are submodules (a trace keeps every submodule's weights); the
        # model itself is read for the heads' arguments (e.g. which features the RPN reads).
        self.backbone = model.backbone
        self.head_modules = nn.ModuleList(model.get_submodule(path) for path, _, _ in self.heads)
        object.__setattr__(self, "model", model)
        self.spec: pytree.TreeSpec | None = None

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.backbone(images)
        outputs = [
            getattr(head, method)(*arguments(self.model, features))
            for head, (_, method, arguments) in zip(self.head_modules, self.heads)
        ]
        tree = (features if self.exports_features else {}, outputs)
        leaves, self.spec = pytree.tree_flatten(tree)
        return tuple(leaves)


@contextlib.contextmanager
def serve_network_outputs(model: nn.Module, run_network: Callable, spec: pytree.TreeSpec):
    """
    While active, ``model``'s backbone runs ``run_network`` (padded images -> the flat outputs of
    :class:`DeployNetwork`) and its heads return their parts of that result: the eager
    ``forward`` then post-processes the exported network's outputs by its own code. Features
    that were not exported are empty tensors (only heads, which ignore them, receive them).
    """
    names = list(model.backbone.output_shape())
    _, heads = network_parts(model)
    served: dict[int, object] = {}

    def backbone(images, *args, **kwargs):
        features, outputs = pytree.tree_unflatten(list(run_network(images)), spec)
        served.update(enumerate(outputs))
        return features or {name: torch.empty(0) for name in names}

    def head(index):
        return lambda *args, **kwargs: served.pop(index)

    # Instance attributes shadow the classes' methods, and are deleted after.
    served_methods = [(model.backbone, "forward", backbone)] + [
        (model.get_submodule(path), method, head(i)) for i, (path, method, _) in enumerate(heads)
    ]
    for module, method, replacement in served_methods:
        setattr(module, method, replacement)
    try:
        yield model
    finally:
        for module, method, _ in served_methods:
            delattr(module, method)
