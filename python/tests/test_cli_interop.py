"""serializer="bytes" files interoperate with the `ringq` CLI's push and pop."""

import os
import subprocess
import warnings

import pytest

from ringq import Queue

from conftest import cli_supports_push_pop, find_ringq_bin


@pytest.fixture
def ringq_bin():
    binary = find_ringq_bin()
    problem = None
    if not binary:
        problem = "no ringq binary (set RINGQ_BIN or run `cargo build --bin ringq`)"
    elif not cli_supports_push_pop(binary):
        problem = f"{binary} has no `push`/`pop` subcommands yet"
    if problem:
        if os.environ.get("RINGQ_REQUIRE_CLI") == "1":
            pytest.fail(problem)
        msg = f"SKIPPING CLI INTEROP: {problem}"
        warnings.warn(msg)
        pytest.skip(msg)
    return binary


async def test_python_bytes_items_popped_by_the_cli(qpath, ringq_bin):
    q = await Queue.create(qpath, serializer="bytes")
    for item in (b"alpha", b"beta", b"gamma"):
        await q.put(item)
    del q
    r = subprocess.run([ringq_bin, "pop", str(qpath), "-n", "2"], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [b"alpha", b"beta"]
    q = await Queue.create(qpath, serializer="bytes")
    assert await q.get_nowait() == b"gamma"
    assert q.empty()


async def test_cli_pushed_items_got_by_python(qpath, ringq_bin):
    r = subprocess.run([ringq_bin, "push", str(qpath)], input=b"one\ntwo\nthree\n", capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    q = await Queue.create(qpath, serializer="bytes")
    assert [await q.get_nowait() for _ in range(q.qsize())] == [b"one", b"two", b"three"]
    assert q.empty()
