"""
:func:`load`: an exported network (TorchScript or ONNX) plus its eager rest, called like the
eager model (``model(batched_inputs)`` -> per image ``panoptic_seg``, ``sem_seg``,
``instances``), with the eager model's own post-processing.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from detectron2.config import CfgNode
from detectron2.modeling import build_model
from torch import nn
from torch.utils import _pytree as pytree

from ..acceleration import optimize_for_cpu
from .export import INPUT_NAME, eager_part_path
from .network import serve_network_outputs

__all__ = ["BACKENDS", "DeployedModel", "load"]

logger = logging.getLogger(__name__)
BACKENDS = ("torchscript", "onnxruntime")
EAGER_PART_KEYS = frozenset(
    {"format", "config", "input_shape", "padded_size_range", "output_spec", "eager_state_dict",
     "network_modules"}  # fmt: skip
)


class DeployedModel(nn.Module):
    """
    The eager model of the export's config, whose backbone and heads answer with the exported
    network's outputs (:func:`~panoptic_zoo.deploy.network.serve_network_outputs`): calling it
    runs the method's own ``forward`` on them. ``model`` is that eager model; its modules' hooks
    fire as in the eager model (the benchmark's network / post-processing split).
    """

    def __init__(
        self,
        path: str | Path,
        backend: str | None = None,
        threads: int | None = None,
        deformable_kernel: bool | None = None,
    ):
        super().__init__()
        path = Path(path)
        eager_path = eager_part_path(path)
        if not path.is_file() or not eager_path.is_file():
            raise FileNotFoundError(
                f"an export is two files, {path} and {eager_path}; run tools/export_model.py"
            )
        eager = torch.load(eager_path, map_location="cpu", weights_only=True)
        missing = EAGER_PART_KEYS - set(eager)
        if missing:
            raise ValueError(
                f"{eager_path} lacks {sorted(missing)}: export again with this version of "
                "panoptic_zoo (tools/export_model.py)"
            )
        native = "onnxruntime" if eager["format"] == "onnx" else "torchscript"
        self.backend = backend or native
        if self.backend != native:
            raise ValueError(f"{path} is a {eager['format']} export: load it with {native}")
        self.input_shape = eager["input_shape"]
        self.padded_size_range = eager["padded_size_range"]
        self.spec = pytree.treespec_loads(eager["output_spec"])
        cfg = CfgNode.load_cfg(eager["config"])
        cfg.MODEL.DEVICE = "cpu"
        self.cfg = cfg
        self.model = build_model(cfg).eval()
        optimize_for_cpu(self.model, cfg)
        missing, unexpected = self.model.load_state_dict(eager["eager_state_dict"], strict=False)
        network_modules = set(eager["network_modules"])
        missing = [k for k in missing if k.rpartition(".")[0] not in network_modules]
        if missing or unexpected:
            raise ValueError(
                f"{eager_path} does not fit the model of its config: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}; export again with this version of panoptic_zoo"
            )
        if self.backend == "onnxruntime":
            try:
                import onnxruntime
            except ImportError as e:
                raise ImportError(
                    "ONNX Runtime is the optional extra 'deploy': scripts/setup.sh installs it "
                    "(with pip: pip install 'panoptic_zoo[deploy]', or pip install onnxruntime)"
                ) from e

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads or torch.get_num_threads()
            options.inter_op_num_threads = 1
            self.session, self.deformable = _onnxruntime_session(path, options, deformable_kernel)
        else:
            if deformable_kernel is not None:
                raise ValueError(
                    f"deformable_kernel is for ONNX exports; {path} is TorchScript (its "
                    "deformable convolutions run torchvision's kernel)"
                )
            # Not a submodule: hooks (the benchmark's) go on the eager model's modules only.
            object.__setattr__(self, "script", torch.jit.load(str(path), map_location="cpu").eval())
            self.deformable = None
        self.exported_network = _ExportedNetworkRun(self._run_backend)
        self.eval()

    def run_network(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The exported network on a normalized, padded batch: its flat outputs."""
        return self.exported_network(images)

    def _run_backend(self, images: torch.Tensor) -> list[torch.Tensor]:
        if self.input_shape is not None and list(images.shape) != self.input_shape:
            raise ValueError(
                f"this export takes padded batches of shape {self.input_shape} only, got "
                f"{list(images.shape)}: export with --dynamic for other sizes"
            )
        for side, size, (low, high) in zip(
            ("height", "width"), images.shape[-2:], self.padded_size_range
        ):
            if size < low or (high is not None and size > high):
                raise ValueError(
                    f"this export holds for padded images of {side} {low} to {high or 'any'}, "
                    f"got {size}: ASPP's image pooling took another branch in the trace (see "
                    "docs/DEPLOYMENT.md, Limits); export again traced on an image of the sizes "
                    "you will run (tools/export_model.py --check-images)"
                )
        if self.backend == "onnxruntime":
            feed = {INPUT_NAME: images.contiguous().numpy()}
            return [torch.from_numpy(x) for x in self.session.run(None, feed)]
        return list(self.script(images))

    @torch.no_grad()
    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        with serve_network_outputs(self.model, self.run_network, self.spec):
            return self.model(batched_inputs)


def _onnxruntime_session(path: Path, options, deformable_kernel: bool | None):
    """
    ONNX Runtime's session of the export (its convolutions of concatenations split:
    :func:`~panoptic_zoo.acceleration.onnxruntime_graph.split_concatenated_convolutions`), and
    what runs its deformable convolutions: "C kernel"
    (:class:`~panoptic_zoo.acceleration.onnxruntime_deformable.DeformKernelOnnxSession`, for
    ``deformable_kernel`` True, or None where the kernel is built, when it computes some of the
    graph's ``DeformConv`` nodes), "DeformConv" (ONNX Runtime's), or None (the graph has none).
    """
    import onnx
    import onnxruntime

    from ..acceleration.kernels import DEFORM_SAMPLING
    from ..acceleration.onnxruntime_deformable import (
        DeformKernelOnnxSession,
        kernel_deform_conv_nodes,
    )
    from ..acceleration.onnxruntime_graph import split_concatenated_convolutions

    if deformable_kernel and DEFORM_SAMPLING is None:
        raise ValueError(
            "deformable_kernel=True needs the deformable C kernel, which is not built here "
            "(a C compiler at install: docs/ACCELERATION.md); load with deformable_kernel=None"
        )
    model = split_concatenated_convolutions(onnx.load(str(path)))
    deform_convs = sum(node.op_type == "DeformConv" for node in model.graph.node)
    kernel_nodes = len(kernel_deform_conv_nodes(model.graph))
    if deformable_kernel is None:
        deformable_kernel = DEFORM_SAMPLING is not None
    if deformable_kernel and kernel_nodes:
        if kernel_nodes < deform_convs:
            logger.info(
                "%s: %d of %d DeformConv nodes on the C kernel, the rest on ONNX Runtime's",
                path, kernel_nodes, deform_convs,
            )  # fmt: skip
        # Its threads otherwise spin-wait after each stage, on the cores the kernel runs on next.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return DeformKernelOnnxSession(model, options), "C kernel"
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session, "DeformConv" if deform_convs else None


class _ExportedNetworkRun(nn.Module):
    """A module call around the backend's run, so that forward hooks see it end (the
    benchmark's network / post-processing split)."""

    runs_exported_network = True

    def __init__(self, run):
        super().__init__()
        self.run = run

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.run(images)


def load(
    path: str | Path,
    backend: str | None = None,
    threads: int | None = None,
    deformable_kernel: bool | None = None,
):
    """
    The export at ``path`` (``.onnx`` runs on ONNX Runtime's CPU provider, TorchScript on
    torch), ready to call on ``batched_inputs`` like the eager model. ``deformable_kernel``
    (ONNX only): the export's deformable convolutions on the project's C kernel between ONNX
    Runtime sessions (True) or on ONNX Runtime's ``DeformConv`` (False); None: the kernel where
    it is built. Which is faster depends on the method (docs/DEPLOYMENT.md, Speed).
    ``.deformable`` says which runs them.
    """
    return DeployedModel(path, backend, threads, deformable_kernel)
