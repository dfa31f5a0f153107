#!/usr/bin/env bash
# Packaging checks for the Python package (CI runs this; the tests are run-tests.sh):
#  1. `maturin sdist`, then `pip install` of that sdist in a fresh venv, and an import;
#  2. `mypy --strict` on python/README.md's example, against the installed stubs;
#  3. the abi3 wheel for manylinux2014 (glibc 2.17) built with `maturin --zig`, checked by
#     `auditwheel show` (tag and the glibc symbols it needs) and installed in the fresh venv.
set -euo pipefail
cd "$(dirname "$0")"
venv=${RINGQ_PYVENV:-/tmp/ringq-pyvenv}
fresh=${RINGQ_PYVENV_FRESH:-/tmp/ringq-pyvenv-fresh}
# Builds go to one target directory so reruns are incremental (pip builds an sdist elsewhere).
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$(cd .. && pwd)/target/python-package}
[ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
export PATH="$venv/bin:$PATH"   # maturin --zig finds zig through `python3 -m ziglang`
"$venv/bin/pip" install -q maturin==1.16.0 ziglang==0.17.1 auditwheel==6.8.2 mypy==2.4.1

echo "--- sdist, installed in a fresh venv"
rm -rf dist "$fresh"
"$venv/bin/maturin" sdist -o dist
python3 -m venv "$fresh"
# A dev-profile build: this checks the sdist's contents, the release wheel is built below.
MATURIN_PEP517_ARGS="--profile dev" "$fresh/bin/pip" install -q dist/ringq-*.tar.gz
(cd /tmp && "$fresh/bin/python" -c '
import asyncio, os, tempfile, ringq
async def main():
    path = os.path.join(tempfile.mkdtemp(), "jobs.q")
    q = await ringq.Queue.create(path, maxsize=10)
    await q.put({"id": 1})
    assert await q.get() == {"id": 1}
    await q.task_done()
    q.close()
asyncio.run(main())
print("sdist install: ok,", ringq.__file__)')

echo "--- mypy --strict on the README's example"
"$fresh/bin/pip" install -q mypy==2.4.1
example=$(mktemp -d)/readme_example.py
{
  echo "import ringq"
  echo
  echo "async def main() -> None:"
  # The first python block of README.md, indented into main().
  awk '/^```python/{on=1; next} /^```/{if(on) exit} on' README.md | sed 's/^/    /'
} > "$example"
(cd "$(dirname "$example")" && "$fresh/bin/mypy" --strict readme_example.py)
# The stubs are what mypy checks against: a misuse must be caught.
printf 'import ringq\n\nasync def bad() -> None:\n    q = await ringq.Queue.create("x", maxsize="10")\n    n: str = q.qsize()\n' > "$example"
if (cd "$(dirname "$example")" && "$fresh/bin/mypy" --strict readme_example.py); then
  echo "mypy accepted a misuse: the stubs are not in effect"; exit 1
fi

echo "--- manylinux2014 abi3 wheel (maturin --zig), auditwheel show"
"$venv/bin/maturin" build --release --zig --compatibility manylinux2014 -o dist
wheel=$(ls dist/ringq-*.whl)
case "$wheel" in
  *-cp38-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl) ;;
  *) echo "unexpected wheel tag: $wheel"; exit 1 ;;
esac
"$venv/bin/auditwheel" show "$wheel" > dist/auditwheel.txt
cat dist/auditwheel.txt
grep -q 'consistent with the following platform tag' dist/auditwheel.txt
tr -d '\n' < dist/auditwheel.txt | grep -q '"manylinux_2_17_x86_64"'
"$fresh/bin/pip" install -q --force-reinstall "$wheel"
"$fresh/bin/python" -c 'import ringq; print("wheel install: ok")'
