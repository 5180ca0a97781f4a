"""Overlay videos browsers play: H.264 in MP4 through imageio-ffmpeg, MPEG-4 Part 2 only without it."""

from __future__ import annotations

import struct
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import pytest

from hrseg.console import console
from hrseg.inference import outputs
from hrseg.inference.outputs import OutputSpec, OutputWriter, h264_encoder


def sample_entries(path: Path) -> list[str]:
    """The codec of every track, read from the MP4's boxes (moov/trak/mdia/minf/stbl/stsd), as ffprobe would."""
    data = path.read_bytes()

    def boxes(start: int, end: int) -> list[tuple[str, int, int]]:
        found, pos = [], start
        while pos + 8 <= end:
            size, kind = struct.unpack(">I4s", data[pos : pos + 8])
            header = 8
            if size == 1:
                size, header = struct.unpack(">Q", data[pos + 8 : pos + 16])[0], 16
            elif size == 0:
                size = end - pos
            found.append((kind.decode("latin-1"), pos + header, pos + size))
            pos += size
        return found

    def walk(start: int, end: int, path: list[str]) -> list[tuple[int, int]]:
        if not path:
            return [(start, end)]
        return [hit for kind, s, e in boxes(start, end) if kind == path[0] for hit in walk(s, e, path[1:])]

    codecs = []
    for s, e in walk(0, len(data), ["moov", "trak", "mdia", "minf", "stbl", "stsd"]):
        codecs += [kind for kind, _, _ in boxes(s + 8, e)]  # stsd: version/flags and entry count, then entries
    return codecs


def write_overlay_video(root: Path, frames: int = 6, size: tuple[int, int] = (48, 32), fps: float = 15.0) -> Path:
    writer = OutputWriter(root, OutputSpec(label_ids=False, colour=False))
    sink = writer.open_video(PurePosixPath("clip"), fps)
    w, h = size
    for i in range(frames):
        rgb = np.full((h, w, 3), (20 * i) % 256, np.uint8)
        ids = np.zeros((h, w), np.uint8)
        ids[:, : w // 2] = 13
        sink.add(rgb, ids)
    assert sink.commit() == {"overlay_video": "overlay/clip_overlay.mp4"}
    return root / "overlay" / "clip_overlay.mp4"


def _read(path: Path) -> tuple[float, list[np.ndarray]]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened()
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return fps, frames


def test_overlay_video_is_h264(tmp_path: Path) -> None:
    assert h264_encoder() is not None, "imageio-ffmpeg (a dev dependency) ships libx264"
    video = write_overlay_video(tmp_path)
    assert sample_entries(video) == ["avc1"]
    data = video.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # index first: a browser starts playing before the end
    fps, frames = _read(video)
    assert (fps, len(frames), frames[0].shape) == (15.0, 6, (32, 48, 3))
    car = np.array([142, 0, 0], np.float64)  # BGR of the car colour, blended half with the frame
    assert np.abs(frames[3][16, 5].astype(np.float64) - (0.5 * car + 0.5 * 60)).max() < 12
    assert not list((tmp_path / "overlay").glob(".*"))


def test_odd_sizes_are_padded_to_even(tmp_path: Path) -> None:
    fps, frames = _read(write_overlay_video(tmp_path, frames=3, size=(47, 33), fps=29.97))
    assert len(frames) == 3 and frames[0].shape == (34, 48, 3) and fps == pytest.approx(29.97, abs=0.01)


def test_without_h264_mpeg4_and_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outputs, "h264_encoder", lambda: None)
    monkeypatch.setattr(outputs, "_warned_no_h264", False)
    with console.capture() as captured:
        first = write_overlay_video(tmp_path / "a")
        write_overlay_video(tmp_path / "b")
    assert sample_entries(first) == ["mp4v"]
    said = [ln for ln in captured.get().splitlines() if "H.264" in ln]
    assert len(said) == 1 and 'pip install imageio-ffmpeg, or "hrseg[video]"' in said[0]
    assert len(_read(first)[1]) == 6
