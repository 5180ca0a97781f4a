"""Expanding user arguments into inputs: files, folders, globs, videos; bad inputs skipped with reasons."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from hrseg.errors import HrsegError
from hrseg.inference.sources import UnreadableInput, VideoReader, collect_inputs, read_image
from tests.inference_fixtures import block_ids, painted_image, write_image, write_video


def _img(seed: int = 0, h: int = 8, w: int = 12) -> np.ndarray:
    return painted_image(block_ids(h, w, seed=seed, block=4))


def _names(inputs) -> list[str]:  # type: ignore[no-untyped-def]
    return [s.name.as_posix() for s in inputs.sources]


def test_folder_is_recursive_sorted_and_mirrors_relative_paths(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for rel in ["b/2.png", "a/z.jpg", "a/sub/1.png", "top.bmp", "c.tiff", "d.webp"]:
        write_image(root / rel, _img())
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    write_image(root / ".hidden" / "x.png", _img())
    found = collect_inputs([root])
    assert _names(found) == ["a/sub/1", "a/z", "b/2", "c", "d", "top"]
    assert found.skipped == []
    assert all(s.kind == "image" and s.path.is_absolute() for s in found.sources)
    assert collect_inputs([str(root)]).sources == found.sources  # deterministic, str or Path


def test_same_file_name_in_two_folders_does_not_collide(tmp_path: Path) -> None:
    write_image(tmp_path / "day" / "cam" / "x.png", _img(1))
    write_image(tmp_path / "night" / "cam" / "x.png", _img(2))
    found = collect_inputs([tmp_path / "day", tmp_path / "night"])
    assert _names(found) == ["day/cam/x", "night/cam/x"]
    files = collect_inputs([tmp_path / "day" / "cam" / "x.png", tmp_path / "night" / "cam" / "x.png"])
    assert _names(files) == ["day/cam/x", "night/cam/x"]


def test_same_stem_with_two_extensions_keeps_both(tmp_path: Path) -> None:
    write_image(tmp_path / "x.png", _img(1))
    write_image(tmp_path / "x.jpg", _img(2))
    write_image(tmp_path / "y.png", _img(3))
    assert _names(collect_inputs([tmp_path])) == ["x_jpg", "x_png", "y"]


def test_single_file_is_named_by_its_stem(tmp_path: Path) -> None:
    path = write_image(tmp_path / "deep" / "frame.png", _img())
    found = collect_inputs([path])
    assert _names(found) == ["frame"] and found.sources[0].path == path.absolute()


def test_glob_patterns_mirror_below_their_fixed_prefix(tmp_path: Path) -> None:
    for rel in ["aachen/a_1.png", "bochum/b_1.png", "bochum/b_2.jpg"]:
        write_image(tmp_path / "data" / rel, _img())
    found = collect_inputs([str(tmp_path / "data" / "*" / "*.png")])
    assert _names(found) == ["aachen/a_1", "bochum/b_1"]
    recursive = collect_inputs([str(tmp_path / "data" / "**" / "*_2.*")])
    assert _names(recursive) == ["bochum/b_2"]


def test_duplicates_are_listed_once(tmp_path: Path) -> None:
    path = write_image(tmp_path / "a.png", _img())
    found = collect_inputs([path, tmp_path, str(tmp_path / "*.png")])
    assert len(found.sources) == 1


def test_videos_are_recognised_by_extension(tmp_path: Path) -> None:
    write_video(tmp_path / "clip.mp4", [_img(i, 16, 16) for i in range(2)])
    write_image(tmp_path / "still.png", _img())
    found = collect_inputs([tmp_path])
    assert [(s.name.as_posix(), s.kind) for s in found.sources] == [("clip", "video"), ("still", "image")]


def test_bad_arguments_are_skipped_with_reasons_while_the_rest_is_kept(tmp_path: Path) -> None:
    good = write_image(tmp_path / "ok" / "good.png", _img())
    empty = tmp_path / "ok" / "empty.png"
    empty.write_bytes(b"")
    (tmp_path / "nothing").mkdir()
    text = tmp_path / "readme.md"
    text.write_text("hello")
    found = collect_inputs([tmp_path / "ok", tmp_path / "missing.png", str(tmp_path / "*.jpg"),
                            tmp_path / "nothing", text])
    assert [s.path for s in found.sources] == [good.absolute()]
    reasons = {Path(s.input).name: s.reason for s in found.skipped}
    assert reasons == {
        "empty.png": "empty file (0 bytes)",
        "missing.png": "does not exist",
        "*.jpg": "pattern matches no images or videos",
        "nothing": "folder holds no images or videos",
        "readme.md": "not an image or video file (extension '.md')",
    }


def test_nothing_found_at_all_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(HrsegError, match=r"no images or videos found: .*missing\.png: does not exist; .*empty: folder"):
        collect_inputs([tmp_path / "missing.png", tmp_path / "empty"])
    with pytest.raises(HrsegError, match="no inputs given"):
        collect_inputs([])


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif", ".webp"])
def test_read_image_formats_as_rgb(tmp_path: Path, suffix: str) -> None:
    rgb = _img(h=16, w=24)
    got = read_image(write_image(tmp_path / f"x{suffix}", rgb))
    assert got.shape == (16, 24, 3) and got.dtype == np.uint8
    if suffix != ".jpg":  # lossless formats come back exactly, in RGB order
        assert np.array_equal(got, rgb)
    else:
        assert np.abs(got.astype(int) - rgb).mean() < 30


def test_read_image_of_grey_and_16_bit_files_gives_rgb(tmp_path: Path) -> None:
    import cv2

    cv2.imwrite(str(tmp_path / "g.png"), np.full((5, 7), 100, np.uint8))
    cv2.imwrite(str(tmp_path / "w.png"), np.full((5, 7, 3), 65535, np.uint16))
    assert read_image(tmp_path / "g.png").shape == (5, 7, 3)
    assert read_image(tmp_path / "w.png").max() == 255


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "empty file"), (b"this is text, not pixels", "not an image"), (None, "not an image")],
)
def test_read_image_refuses_unreadable_files(tmp_path: Path, content: bytes | None, reason: str) -> None:
    path = tmp_path / "bad.png"
    if content is None:  # a real PNG cut in half: corrupt
        data = (write_image(tmp_path / "whole.png", _img(h=64, w=64))).read_bytes()
        content = data[: len(data) // 2]
    path.write_bytes(content)
    with pytest.raises(UnreadableInput, match=reason):
        read_image(path)


def test_read_image_reports_read_errors(tmp_path: Path) -> None:
    folder = tmp_path / "looks_like.png"
    folder.mkdir()
    with pytest.raises(UnreadableInput, match="cannot read file"):
        read_image(folder)


def test_video_reader_gives_frames_fps_and_size(tmp_path: Path) -> None:
    frames = [_img(i, 16, 24) for i in range(3)]
    with VideoReader(write_video(tmp_path / "c.mp4", frames, fps=12.0)) as reader:
        got = list(reader.frames())
        assert (reader.width, reader.height, reader.fps, reader.frame_estimate) == (24, 16, 12.0, 3)
    assert len(got) == 3 and got[0].shape == (16, 24, 3)


def test_video_reader_refuses_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 20)
    with pytest.raises(UnreadableInput, match="not a video"):
        VideoReader(path)


def test_names_are_posix_relative_paths(tmp_path: Path) -> None:
    write_image(tmp_path / "a" / "b" / "c.png", _img())
    (src,) = collect_inputs([tmp_path]).sources
    assert src.name == PurePosixPath("a/b/c")


def test_excluded_folders_are_not_descended(tmp_path: Path) -> None:
    write_image(tmp_path / "in" / "a.png", _img())
    write_image(tmp_path / "in" / "out" / "labelIds" / "a_pred.png", _img())
    assert _names(collect_inputs([tmp_path / "in"], exclude=[tmp_path / "in" / "out"])) == ["a"]
    assert _names(collect_inputs([str(tmp_path / "in" / "**")], exclude=[tmp_path / "in" / "out"])) == ["a"]
    assert _names(collect_inputs([tmp_path / "in"])) == ["a", "out/labelIds/a_pred"]


def test_a_single_path_argument_is_one_input_not_its_characters(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", _img())
    assert _names(collect_inputs(str(tmp_path))) == ["a"]
    assert _names(collect_inputs(tmp_path / "a.png")) == ["a"]
