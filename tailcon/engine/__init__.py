"""Training / evaluation loop, the run directory, logging, metrics, schedules."""

from .evaluation import classify_dataset, evaluate_checkpoint
from .metrics import format_report, shot_accuracy, shot_groups
from .rundir import RunDir, RunDirError, atomic_write_text, load_checkpoint, save_checkpoint
from .schedule import lr_at_epoch
from .stages import train
from .trainer import NonFiniteLossError, Trainer

__all__ = ["classify_dataset", "evaluate_checkpoint", "format_report", "shot_accuracy", "shot_groups", "RunDir",
           "RunDirError", "atomic_write_text", "load_checkpoint", "save_checkpoint", "lr_at_epoch", "train",
           "NonFiniteLossError", "Trainer"]
