"""Training / evaluation loop, checkpoints, logging, metrics, schedules."""

from .checkpoint import atomic_write_text, load_checkpoint, save_checkpoint
from .metrics import format_report, shot_accuracy, shot_groups
from .schedule import lr_at_epoch
from .trainer import NonFiniteLossError, Trainer, evaluate_checkpoint, train

__all__ = ["atomic_write_text", "load_checkpoint", "save_checkpoint", "format_report", "shot_accuracy",
           "shot_groups", "lr_at_epoch", "NonFiniteLossError", "Trainer", "evaluate_checkpoint", "train"]
