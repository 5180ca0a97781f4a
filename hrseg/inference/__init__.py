"""Inference on user data: test-time options, inputs, output files, the predictor, Cityscapes submissions.

``infer``/``predict_train_ids`` (tta) work on normalised batches and are what
evaluation shares; ``predict`` and ``segment_image`` take user files or arrays.
"""

from hrseg.device import resolve_amp
from hrseg.inference.engine import segment_image, working_image
from hrseg.inference.outputs import OutputSpec, OutputWriter
from hrseg.inference.predictor import PredictResult, predict
from hrseg.inference.sources import Inputs, Skipped, Source, UnreadableInput, collect_inputs, read_image
from hrseg.inference.submission import SubmissionResult, SubmissionWriter, submission_name, write_submission
from hrseg.inference.tta import InferenceOptions, infer, predict_train_ids, window_starts

__all__ = [
    "InferenceOptions", "Inputs", "OutputSpec", "OutputWriter", "PredictResult", "Skipped", "Source",
    "SubmissionResult", "SubmissionWriter", "UnreadableInput", "collect_inputs", "infer", "predict",
    "predict_train_ids", "read_image", "resolve_amp", "segment_image", "submission_name", "window_starts",
    "working_image", "write_submission",
]
