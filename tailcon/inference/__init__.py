"""Using a trained model: ``tailcon.load(path)`` (a run directory, a checkpoint or an export),
``tailcon predict`` and ``tailcon embed`` (:mod:`.predictor`); reading exported artifacts
(:mod:`.artifacts`)."""

from .artifacts import FORMATS, NEEDS_TRUST, SUFFIX, ExportError, InferenceModel, export_format, load_exported
from .predictor import Predictor, format_topk, image_info, load

__all__ = ["FORMATS", "NEEDS_TRUST", "SUFFIX", "ExportError", "InferenceModel", "export_format", "load_exported",
           "Predictor", "format_topk", "image_info", "load"]
