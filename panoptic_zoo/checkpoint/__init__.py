from .checkpointer import (
    CheckpointError,
    CheckpointMismatchError,
    CheckpointWriteError,
    CorruptCheckpointError,
    PanopticCheckpointer,
    UnsafeCheckpointError,
    build_checkpointer,
)

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointWriteError",
    "CorruptCheckpointError",
    "PanopticCheckpointer",
    "UnsafeCheckpointError",
    "build_checkpointer",
]
