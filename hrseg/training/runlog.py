"""What a run records as it trains: metrics.jsonl, the loggers asked for (loggers.py), and the bar's text.

Only the main process writes; on other ranks every method does nothing, so the
loop calls them unconditionally.
"""

from __future__ import annotations

import json
from typing import IO, Any

from hrseg.training.config import TrainConfig
from hrseg.training.rundir import RunDir
from hrseg.training.loggers import Logger, numbers, open_loggers
from hrseg.training.tensorboard import TensorBoardLog, WeightPicture


class RunLog:
    """metrics.jsonl (every ``log_every`` iterations and the last) and the same numbers to every logger."""

    def __init__(self, run: RunDir, cfg: TrainConfig, is_main: bool, picture: WeightPicture | None = None) -> None:
        self.cfg = cfg
        self.file: IO[str] | None = run.metrics_path.open("a") if is_main else None
        self.loggers: list[Logger] = open_loggers(run, cfg, picture) if is_main else []
        self.tb = next((lg for lg in self.loggers if isinstance(lg, TensorBoardLog)), None)  # weight pictures

    def record(self, values: dict[str, Any], iteration: int) -> None:
        if self.file is None or not (iteration % self.cfg.run.log_every == 0 or iteration == self.cfg.optim.iters):
            return
        self.file.write(json.dumps(values) + "\n")
        self.file.flush()
        for logger in self.loggers:
            logger.scalars(numbers(values), iteration)

    def record_val(self, values: dict[str, Any], iteration: int) -> None:
        """A validation's line (always written, whatever ``log_every``); TensorBoard gets val/miou, val/iou/<class>."""
        if self.file is None:
            return
        self.file.write(json.dumps(values) + "\n")
        self.file.flush()
        flat = {"val/miou": values["val_miou"],
                **{f"val/iou/{name}": iou for name, iou in values["val_iou"].items() if iou is not None}}
        for logger in self.loggers:
            logger.scalars({k: v for k, v in flat.items() if v is not None}, iteration)

    def wants_image(self, iteration: int) -> bool:
        return self.tb is not None and self.tb.wants_image(iteration)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        for logger in self.loggers:
            logger.close()


def describe(values: dict[str, float]) -> str:
    """The progress bar's text: the main losses and the mean weight."""
    parts = [f"{k} {values[k]:.3f}" for k in ("target", "source", "w_cls", "g", "d") if k in values]
    if "weight_mean" in values:
        parts.append(f"w {values['weight_mean']:.2f}")
    return "train " + " ".join(parts)
