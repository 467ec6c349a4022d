# Sourced by scripts/test: makes headless Chromium and its WebDriver available to the console's
# browser tests (bindings/python/tests/test_console.py), from Debian's packages `chromium` and
# `chromium-driver`, and exports THREEPORT_CHROMIUM and THREEPORT_CHROMEDRIVER. No browser is
# downloaded by a test tool.

ensure_chromium() {
  local chromium=/usr/bin/chromium driver=/usr/bin/chromedriver sudo=""
  if [ ! -x "$chromium" ] || [ ! -x "$driver" ]; then
    if [ "$(id -u)" -ne 0 ]; then
      command -v sudo >/dev/null && sudo="sudo -n"
    fi
    if ! command -v apt-get >/dev/null; then
      echo "chromium: not installed, and no apt-get to install it (install chromium and its chromedriver)" >&2
      return 1
    fi
    echo "chromium: installing Debian's chromium and chromium-driver"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q chromium chromium-driver >/dev/null ||
      { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q chromium chromium-driver >/dev/null; } ||
      { echo "chromium: apt-get install chromium chromium-driver failed" >&2; return 1; }
  fi
  export THREEPORT_CHROMIUM="$chromium" THREEPORT_CHROMEDRIVER="$driver"
  echo "chromium: $("$chromium" --version 2>/dev/null | head -n 1)"
}
