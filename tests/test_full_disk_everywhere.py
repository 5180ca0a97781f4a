"""A full disk while writing is one line and exit 2 in every command (issue 18, case 11).

The disk is really full: a tiny tmpfs, filled up, in a private mount namespace
(``unshare -rm``), so the errors are the kernel's, not a simulation.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.cli_fixtures import invoke, text, tiny_run
from tests.data_fixtures import cached_synthetic_data, private_tmpfs_works

REPO = Path(__file__).resolve().parents[1]


COMMANDS = {
    "predict": "predict {run} {img} --out {mnt}/pred --no-progress",
    "export": "export {run} --out {mnt}/model.pt",
    "eval_json": "eval --run {run} --json {mnt}/e.json --no-progress",
    "eval_save": "eval --run {run} --save-predictions {mnt}/sp --no-progress --json {tmp}/e2.json",
    "visualize": "visualize predictions --run {run} --out {mnt}/vis --num 2 --no-progress",
    "report": "report {run} --out {mnt}/rep",
}


@pytest.mark.skipif(not private_tmpfs_works(), reason="needs a private mount namespace (unshare -rm) for a tiny tmpfs")
def test_a_full_disk_is_one_line_in_every_command(tmp_path_factory: pytest.TempPathFactory) -> None:
    data = cached_synthetic_data(tmp_path_factory, prepared_size=(32, 16))
    tmp = tmp_path_factory.mktemp("full")
    run = tiny_run(data, tmp / "run")
    assert invoke("eval", "--run", run, "--no-progress").exit_code == 0
    img = tmp / "img.png"
    cv2.imwrite(str(img), np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8))
    mnt = tmp / "mnt"
    mnt.mkdir()
    lines = [f"mount -t tmpfs -o size=256k tmpfs {mnt}",
             f"dd if=/dev/zero of={mnt}/filler bs=4k > /dev/null 2>&1; true"]
    for name, cmd in COMMANDS.items():
        args = cmd.format(run=run, img=img, mnt=mnt, tmp=tmp)
        lines.append(f"{sys.executable} -m hrseg {args} > {tmp}/{name}.txt 2>&1; echo \"{name} rc=$?\"")
        lines.append(f"ls -A {mnt} > {tmp}/{name}.ls")
    env = dict(os.environ, COLUMNS="300", PYTHONPATH=str(REPO))
    done = subprocess.run(["unshare", "-rm", "bash", "-c", "\n".join(lines)], capture_output=True, text=True,
                          timeout=500, env=env)
    codes = dict(line.split(" rc=") for line in done.stdout.split("\n") if " rc=" in line)
    assert set(codes) == set(COMMANDS), done.stdout + done.stderr
    for name in COMMANDS:
        out = (tmp / f"{name}.txt").read_text()
        lines_out = [ln for ln in out.splitlines() if ln.strip()]
        assert codes[name] == "2", f"{name}: {out}"
        assert "Traceback" not in out and lines_out[-1].startswith("error: out of disk space writing"), f"{name}: {out}"
        # nothing half-written left behind: no temporary file
        assert not [n for n in (tmp / f"{name}.ls").read_text().split() if n.endswith(".tmp")], name
