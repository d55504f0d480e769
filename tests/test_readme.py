"""Every console example of the README that needs no GPU and no internet runs as written, in order, in a fresh
folder, and prints what the README shows (numbers, ids and times aside)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def console_examples(text: str) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) for every ``$ `` line of every ```console block, in order."""
    examples: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            if not lines[i].startswith("$ "):
                i += 1
                continue
            command = lines[i][2:]
            while command.endswith("\\"):
                i += 1
                command = command[:-1] + " " + lines[i].strip()
            i += 1
            expected = []
            while i < len(lines) and not lines[i].startswith("$ "):
                expected.append(lines[i])
                i += 1
            examples.append((command, expected))
    return examples


def _mask(line: str) -> str:
    """A line with what varies between runs (ids, numbers, timestamps) replaced and spaces collapsed."""
    line = re.sub(r"\d{4}-\d\d-\d\dT[\d:.+]+", "<time>", line)
    line = re.sub(r"\b[0-9a-f]{8,16}\b", "<id>", line)
    line = re.sub(r"-?\d[\d,]*(\.\d+)?", "#", line)
    return " ".join(line.split())


def _argv(command: str) -> list[str]:
    if command == "make demo":  # what the Makefile's demo target runs
        return [sys.executable, "-m", "zoo.demo", "--out", "runs/demo"]
    argv = shlex.split(command)
    assert argv[0] == "zoo", f"README console example is not a zoo command: {command}"
    return [sys.executable, "-m", "zoo.cli", *argv[1:]]


def test_every_offline_console_example_runs_as_written(tmp_path):
    examples = [(c, e) for c, e in console_examples((ROOT / "README.md").read_text())
                if "hf://" not in c and "cuda" not in c]
    assert len(examples) >= 8 and examples[0][0] == "make demo"
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "OMP_NUM_THREADS": "1",
           "ZOO_REGISTRY": str(tmp_path / "default-registry"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}
    for command, expected in examples:
        proc = subprocess.run(_argv(command), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        output = proc.stdout.splitlines() + proc.stderr.splitlines()
        wants_error = bool(expected) and expected[0].startswith("zoo: error:")
        if wants_error:
            assert proc.returncode != 0 and proc.stderr.count("\n") == 1, (command, proc.stderr)
        else:
            assert proc.returncode == 0, (command, proc.stderr[-2000:])
        masked = {_mask(line) for line in output}
        for line in expected:
            if line.strip() in ("", "..."):
                continue
            assert _mask(line) in masked, (command, line, output)
