"""Prediction files: labelId, colour and overlay PNGs per image; an overlay video per video.

Each kind lives in its own tree under the output folder (``labelIds/``,
``colour/``, ``overlay/``) with the input's relative name, so a folder of
Cityscapes images gives a ``labelIds/`` tree that cityscapesScripts accepts
(it searches one root recursively for ``<city>_<seq>_<frame>*.png`` and
refuses a second match, so colour files must not sit beside the ids). Every
file is written under a temporary name and renamed when complete: an
interrupted run leaves whole files or none.
"""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import IO, Any

import cv2
import numpy as np

from hrseg.atomic import write_bytes
from hrseg.data.labels import NUM_CLASSES, TRAIN_TO_LABEL, blend, colorize
from hrseg.errors import HrsegError
from hrseg.data.png import write_png

LABEL_IDS, COLOUR, OVERLAY = "labelIds", "colour", "overlay"
KINDS = (LABEL_IDS, COLOUR, OVERLAY)
SUFFIXES = {LABEL_IDS: "_pred_labelIds.png", COLOUR: "_pred_color.png", OVERLAY: "_overlay.png"}
VIDEO_SUFFIX = "_overlay.mp4"
VIDEO_FOURCC = "mp4v"  # the fallback: MPEG-4 Part 2, which OpenCV's wheels can write but browsers do not play
H264, MPEG4 = "h264", "mpeg4"
NO_H264 = ("overlay video: no H.264 encoder (pip install imageio-ffmpeg, or \"hrseg[video]\"); writing MPEG-4 "
           "Part 2, which browsers do not play")


@functools.lru_cache(maxsize=1)
def h264_encoder() -> str | None:
    """The ffmpeg executable shipped by imageio-ffmpeg when it has libx264, else None.

    OpenCV's wheels carry no H.264 encoder (licensing), so browser-playable
    video needs an ffmpeg that brings its own; imageio-ffmpeg's static build
    does, on every platform it has wheels for.
    """
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
        listed = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=30)
    except (OSError, RuntimeError, subprocess.SubprocessError):
        return None
    return exe if " libx264 " in listed.stdout else None


_warned_no_h264 = False


def _say_no_h264() -> None:
    global _warned_no_h264
    if not _warned_no_h264:
        from hrseg.console import console

        console.print(NO_H264, style="yellow", markup=False, highlight=False, soft_wrap=True)
        _warned_no_h264 = True


@dataclass(frozen=True)
class OutputSpec:
    """Which files to write. ``frames``: for a video, also every frame's PNGs of the enabled kinds."""

    label_ids: bool = True
    colour: bool = True
    overlay: bool = True
    frames: bool = False
    alpha: float = 0.5  # weight of the class colours in an overlay

    def kinds(self) -> tuple[str, ...]:
        return tuple(k for k, on in ((LABEL_IDS, self.label_ids), (COLOUR, self.colour), (OVERLAY, self.overlay)) if on)

    def validate(self) -> "OutputSpec":
        if not self.kinds():
            raise HrsegError("nothing to write: turn on at least one of --label-ids, --colour, --overlay")
        if not 0.0 <= self.alpha <= 1.0:
            raise HrsegError(f"--alpha: must be in [0, 1], got {self.alpha}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_train_ids(train_ids: np.ndarray, what: str) -> np.ndarray:
    ids = np.asarray(train_ids)
    if ids.ndim != 2 or ids.dtype != np.uint8:
        raise ValueError(f"{what}: expected a (H, W) uint8 trainId map, got {ids.dtype} {ids.shape}")
    return ids


def label_id_image(train_ids: np.ndarray) -> np.ndarray:
    """trainIds -> Cityscapes labelIds (ignore -> 0, 'unlabeled', as the official tools expect)."""
    return TRAIN_TO_LABEL[train_ids]


def overlay_image(rgb: np.ndarray, train_ids: np.ndarray, alpha: float) -> np.ndarray:
    return blend(rgb, colorize(train_ids), alpha)


def _gray_png(array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise RuntimeError("OpenCV could not encode a PNG")
    return buf.tobytes()


class OutputWriter:
    """Writes the enabled kinds for images and video frames; returns paths relative to ``root``."""

    def __init__(self, root: str | os.PathLike[str], spec: OutputSpec | None = None) -> None:
        self.root = Path(root)
        self.spec = (spec or OutputSpec()).validate()

    def relpath(self, kind: str, name: PurePosixPath, frame: int | None = None) -> PurePosixPath:
        """``labelIds/city/x_pred_labelIds.png``; a frame: ``labelIds/city/clip/clip_000012_pred_labelIds.png``."""
        if frame is None:
            return PurePosixPath(kind) / name.with_name(name.name + SUFFIXES[kind])
        return PurePosixPath(kind) / name / f"{name.name}_{frame:06d}{SUFFIXES[kind]}"

    def write_image(self, name: PurePosixPath, rgb: np.ndarray, train_ids: np.ndarray,
                    frame: int | None = None) -> dict[str, str]:
        """All enabled kinds for one picture at its own resolution."""
        ids = check_train_ids(train_ids, str(name))
        if ids.shape != rgb.shape[:2]:
            raise ValueError(f"{name}: prediction {ids.shape} is not at the image's size {rgb.shape[:2]}")
        if ids.size and int(ids.max()) >= NUM_CLASSES and int(ids.max()) != 255:
            raise ValueError(f"{name}: trainId {int(ids.max())} is not a Cityscapes class")
        written: dict[str, str] = {}
        for kind in self.spec.kinds():
            rel = self.relpath(kind, name, frame)
            if kind == LABEL_IDS:
                write_bytes(self.root / rel, _gray_png(label_id_image(ids)))
            elif kind == COLOUR:
                write_png(self.root / rel, colorize(ids))
            else:
                write_png(self.root / rel, overlay_image(rgb, ids, self.spec.alpha))
            written[kind] = rel.as_posix()
        return written

    def video_relpath(self, name: PurePosixPath) -> PurePosixPath:
        return PurePosixPath(OVERLAY) / name.with_name(name.name + VIDEO_SUFFIX)

    def open_video(self, name: PurePosixPath, fps: float) -> "VideoSink":
        return VideoSink(self, name, fps)


class VideoSink:
    """One video's outputs: an overlay video (same fps and size) and optional frame PNGs.

    The video is H.264 in MP4 (yuv420p, moov atom first), which browsers play,
    encoded by imageio-ffmpeg's ffmpeg; an odd width or height is padded by
    one black column or row, as 4:2:0 chroma needs. Without that encoder it is
    OpenCV's MPEG-4 Part 2, said once in one line (:data:`NO_H264`);
    :attr:`codec` says which. The file is written under a temporary name that
    keeps ``.mp4`` (both writers pick the container from it) and renamed over
    the final name only by :meth:`commit`.
    """

    def __init__(self, writer: OutputWriter, name: PurePosixPath, fps: float) -> None:
        self.writer = writer
        self.name = name
        self.fps = fps
        self.frames = 0
        self.size: tuple[int, int] | None = None
        self.codec: str | None = None
        self._video: cv2.VideoWriter | None = None
        self._ffmpeg: subprocess.Popen[bytes] | None = None
        self._errors: IO[bytes] | None = None
        self._tmp: Path | None = None
        self.rel = writer.video_relpath(name)

    def _open(self, width: int, height: int) -> None:
        final = self.writer.root / self.rel
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".mp4", dir=final.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self.size = (width, height)
        exe = h264_encoder()
        if exe is not None:
            rate = Fraction(self.fps).limit_denominator(1001) if self.fps > 0 else Fraction(25)
            cmd = [exe, "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                   "-s", f"{width}x{height}", "-r", f"{rate.numerator}/{rate.denominator}", "-i", "-", "-an",
                   "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                   "-preset", "medium", "-crf", "20", "-movflags", "+faststart", "-f", "mp4", tmp]
            self._errors = tempfile.TemporaryFile()
            self._ffmpeg = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                            stderr=self._errors)
            self.codec = H264
            return
        _say_no_h264()
        self._video = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*VIDEO_FOURCC), self.fps, (width, height))
        if not self._video.isOpened():
            self.abort()
            raise HrsegError(f"{final}: OpenCV cannot write an {VIDEO_FOURCC} video here")
        self.codec = MPEG4

    def _encoder_error(self) -> str:
        if self._errors is None:
            return ""
        self._errors.seek(0)
        lines = self._errors.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""

    def add(self, rgb: np.ndarray, train_ids: np.ndarray) -> None:
        ids = check_train_ids(train_ids, str(self.name))
        spec = self.writer.spec
        if spec.overlay:
            if self.size is None:
                self._open(rgb.shape[1], rgb.shape[0])
            picture = overlay_image(rgb, ids, spec.alpha)
            if self._ffmpeg is not None:
                assert self._ffmpeg.stdin is not None
                try:
                    self._ffmpeg.stdin.write(np.ascontiguousarray(picture).tobytes())
                except BrokenPipeError:
                    self._ffmpeg.wait()
                    raise HrsegError(f"{self.writer.root / self.rel}: the H.264 encoder stopped: "
                                     f"{self._encoder_error() or f'exit {self._ffmpeg.returncode}'}") from None
            else:
                assert self._video is not None
                self._video.write(np.ascontiguousarray(picture[:, :, ::-1]))
        if spec.frames:
            self.writer.write_image(self.name, rgb, ids, frame=self.frames)
        self.frames += 1

    def outputs(self) -> dict[str, str]:
        """Relative paths written for this video: the overlay video and, with frames, each kind's folder."""
        out: dict[str, str] = {}
        if self.writer.spec.overlay and self.frames:
            out["overlay_video"] = self.rel.as_posix()
        if self.writer.spec.frames:
            for kind in self.writer.spec.kinds():
                out[f"{kind}_frames"] = (PurePosixPath(kind) / self.name).as_posix() + "/"
        return out

    def commit(self) -> dict[str, str]:
        if self._ffmpeg is not None:
            assert self._ffmpeg.stdin is not None
            self._ffmpeg.stdin.close()
            code = self._ffmpeg.wait()
            self._ffmpeg = None
            if code != 0:
                message = self._encoder_error() or f"exit {code}"
                self.abort()
                raise HrsegError(f"{self.writer.root / self.rel}: the H.264 encoder failed: {message}")
        if self._errors is not None:
            self._errors.close()
            self._errors = None
        if self._video is not None:
            self._video.release()
            self._video = None
        if self._tmp is not None:
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(self._tmp, 0o666 & ~mask)  # mkstemp makes 0600; results should be as readable as any file
            os.replace(self._tmp, self.writer.root / self.rel)
            self._tmp = None
        return self.outputs()

    def abort(self) -> None:
        if self._ffmpeg is not None:
            self._ffmpeg.kill()
            self._ffmpeg.wait()
            if self._ffmpeg.stdin is not None:
                try:
                    self._ffmpeg.stdin.close()
                except BrokenPipeError:
                    pass
            self._ffmpeg = None
        if self._errors is not None:
            self._errors.close()
            self._errors = None
        if self._video is not None:
            self._video.release()
            self._video = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None
