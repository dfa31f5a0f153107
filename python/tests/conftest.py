import dataclasses
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


@dataclasses.dataclass(frozen=True)
class Job:
    """A small dataclass item, as aiodiskqueue's users put."""

    id: int
    name: str
    tags: tuple = ()


@pytest.fixture
def qpath(tmp_path):
    return tmp_path / "jobs.q"


def find_ringq_bin():
    """The `ringq` CLI: $RINGQ_BIN, else target/{debug,release}/ringq under
    $CARGO_TARGET_DIR or the repository, else `ringq` on PATH."""
    env = os.environ.get("RINGQ_BIN")
    if env:
        return env
    dirs = [os.environ.get("CARGO_TARGET_DIR"), os.path.join(REPO, "target")]
    for d in dirs:
        if not d:
            continue
        for profile in ("debug", "release"):
            cand = os.path.join(d, profile, "ringq")
            if os.access(cand, os.X_OK):
                return cand
    return shutil.which("ringq")


def cli_supports_push_pop(binary):
    """True when `binary --help` lists the `push` and `pop` subcommands."""
    try:
        r = subprocess.run([binary, "--help"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    lines = [l.split() for l in r.stdout.decode(errors="replace").splitlines()]
    names = {words[0] for words in lines if words}
    return r.returncode == 0 and {"push", "pop"} <= names


PYTHON = sys.executable
