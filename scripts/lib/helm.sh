# Sourced by scripts/test: makes a `helm` for the Helm tests and exports THREEPORT_TEST_HELM.
#
# No helm binary comes from the registries these machines reach, so unless one is on PATH,
# the pinned helm-python-sdk (Helm v4's Go SDK as libhelm_c) is installed from PyPI and
# scripts/helm-standin/helm.py, which answers the helm commands the renderer runs on that
# engine, is wrapped as an executable named `helm` in the target directory.

HELM_SDK_VERSION=0.2.2

ensure_helm() {
  local target_dir=$1 python bin
  if [ -n "${THREEPORT_TEST_HELM:-}" ]; then
    echo "helm: $THREEPORT_TEST_HELM (THREEPORT_TEST_HELM)"
    return 0
  fi
  if command -v helm >/dev/null 2>&1; then
    THREEPORT_TEST_HELM=$(command -v helm)
    export THREEPORT_TEST_HELM
    echo "helm: $(helm version --short) at $THREEPORT_TEST_HELM"
    return 0
  fi
  python=$(python3 -c 'import sys; print(sys.executable)')
  if ! python3 -c "import helm_python, sys; sys.exit(helm_python.__version__ != '$HELM_SDK_VERSION')" 2>/dev/null; then
    echo "helm: installing helm-python-sdk==$HELM_SDK_VERSION from PyPI"
    python3 -m pip install -q --disable-pip-version-check "helm-python-sdk==$HELM_SDK_VERSION"
  fi
  mkdir -p "$target_dir/helm-standin"
  bin="$target_dir/helm-standin/helm"
  printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$python" "$(pwd)/scripts/helm-standin/helm.py" > "$bin"
  chmod +x "$bin"
  export THREEPORT_TEST_HELM="$bin"
  echo "helm: $("$bin" version --short) (stand-in on helm-python-sdk) at $bin"
}
