#!/usr/bin/env bash
# Bench: a cold `pip install ./bindings/python` as a new user runs it: a fresh virtual
# environment (pip fetches maturin for the build), an empty Cargo target directory, the
# release build. The wheel is built as for publishing (manylinux, checked by maturin's
# auditwheel; a plain `pip install` skips that check and tags it linux_x86_64, with the same
# compile), then installed and imported. Prints the time, the crates compiled and the
# wheel's tag; last line:
#   RESULT pip_install seconds=<s> crates=<n> wheel_mb=<size> tag=<platform tag>
# Usage, from the project root: bindings/python/tools/bench_install.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
export CARGO_TARGET_DIR="$work/target"
start=$(date +%s.%N)
MATURIN_PEP517_ARGS="--compatibility manylinux_2_34" \
  "$work/venv/bin/pip" wheel --disable-pip-version-check -w "$work/wheels" ./bindings/python -v > "$work/build.log" 2>&1 || {
  tail -40 "$work/build.log"; exit 1; }
"$work/venv/bin/pip" install --disable-pip-version-check -q "$work"/wheels/threeport-*.whl
end=$(date +%s.%N)
"$work/venv/bin/python" -c 'import threeport; print("import threeport:", len(threeport.KINDS), "kinds")'
wheel=$(ls "$work"/wheels/threeport-*.whl)
crates=$(grep -c '   Compiling ' "$work/build.log" || true)
seconds=$(python3 -c "print(round($end - $start))")
size=$(python3 -c "import os; print(round(os.path.getsize('$wheel') / 1e6, 1))")
tag=$(basename "$wheel" .whl | rev | cut -d- -f1 | rev)
echo "cold pip install ./bindings/python: ${seconds} s, ${crates} crates compiled, wheel $(basename "$wheel") (${size} MB)"
echo "baseline: 1128 s (18.8 min), 325 crates, an 11.9 MB linux_x86_64 wheel before the Python package stopped building the AWS SDK and kube"
echo "RESULT pip_install seconds=${seconds} crates=${crates} wheel_mb=${size} tag=${tag}"
