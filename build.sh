#!/usr/bin/env bash
# rs-vqa: one entry point for setting up, testing, demoing and packaging the plugin.
#   ./build.sh setup [--gpu]   system packages, .venv, pinned Python stack, stack report
#   ./build.sh test [ARGS]     setup, then the whole test suite (ARGS go to pytest)
#   ./build.sh demo            setup, then the main job on the bundled default model
#   ./build.sh bench [NAME]    setup, then the benchmark scripts under bench/
#   ./build.sh screenshot      setup, then the real QGIS desktop under Xvfb -> resources/screenshots/dock.png
#   ./build.sh package [DIR]   plugin zip for QGIS "Install from ZIP" -> dist/ (or DIR)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
APT_PACKAGES=(qgis python3-qgis qgis-providers python3-gdal gdal-bin python3-venv
              xvfb xauth imagemagick wordnet-base strace)

say() { printf '\033[1m[rs-vqa]\033[0m %s\n' "$*" >&2; }

missing_apt_packages() {
  local p missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  echo "${missing[@]:-}"
}

setup_system() {
  local missing
  missing="$(missing_apt_packages)"
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    say "Missing Debian packages: $missing"
    say "Run: sudo apt-get update && sudo apt-get install -y --no-install-recommends $missing"
    exit 1
  fi
  say "Installing Debian packages: $missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

setup_venv() {
  local flavour="$1" stamp="$VENV/.rs-vqa-stamp" want
  # The venv must be made by Debian's python3 so that it sees QGIS, GDAL and PyQt5.
  if [ ! -x "$PY" ]; then
    say "Creating $VENV (system site packages: QGIS, GDAL, PyQt5)"
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
  fi
  want="$flavour $(cat "$ROOT/requirements.txt" "$ROOT/requirements-$flavour.txt" "$ROOT/pyproject.toml" | sha1sum | cut -c1-16)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  say "Installing the pinned Python stack ($flavour)"
  "$PY" -m pip install -q --upgrade pip >/dev/null
  if [ "$flavour" = gpu ]; then
    "$PY" -m pip uninstall -q -y onnxruntime >/dev/null 2>&1 || true
  else
    "$PY" -m pip uninstall -q -y onnxruntime-gpu >/dev/null 2>&1 || true
  fi
  if [ "$flavour" = gpu ]; then
    # PyPI's Linux torch wheel is the CUDA build; a local "+cpu" wheel in a pip find-links folder
    # would win the version tie, so the GPU runtime is resolved from the index alone.
    "$PY" -m pip install -q --isolated -r "$ROOT/requirements.txt" -r "$ROOT/requirements-gpu.txt"
  else
    "$PY" -m pip install -q -r "$ROOT/requirements.txt" -r "$ROOT/requirements-cpu.txt"
  fi
  "$PY" -m pip install -q --no-deps -e "$ROOT"
  echo "$want" > "$stamp"
}

cmd_setup() {
  local flavour=cpu
  [ "${1:-}" = "--gpu" ] && flavour=gpu
  setup_system
  setup_venv "$flavour"
  "$PY" -m rs_vqa_plugin doctor
}

cmd_test() {
  cmd_setup
  cd "$ROOT"
  QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 "$PY" -m pytest -q -p no:cacheprovider "$@" tests
}

cmd_demo() {
  cmd_setup
  cd "$ROOT"
  HF_HUB_OFFLINE=1 "$PY" -m rs_vqa_plugin demo
}

cmd_bench() {
  cmd_setup
  cd "$ROOT"
  local name f
  if [ $# -eq 0 ]; then
    for f in bench/bench_*.py; do say "$f"; HF_HUB_OFFLINE=1 "$PY" "$f"; done
  else
    for name in "$@"; do HF_HUB_OFFLINE=1 "$PY" "bench/bench_$name.py"; done
  fi
}

cmd_screenshot() {
  cmd_setup
  cd "$ROOT"
  HF_HUB_OFFLINE=1 "$PY" tests/desktop/screenshot.py
}

cmd_package() {
  local version out stage dist
  # Absolute, relative to where it was called from: the zip is written from inside $stage.
  dist="$(realpath -m "${1:-$ROOT/dist}")"
  cd "$ROOT"
  version="$(sed -n 's/^version=//p' metadata.txt)"
  out="$dist/rs_vqa_plugin-$version.zip"
  stage="$(mktemp -d)"
  # Expanded now: the trap runs after this function's locals are gone (set -u).
  trap "rm -rf '$stage'" RETURN
  mkdir -p "$stage/rs_vqa_plugin/resources" "$dist"
  # QGIS expects one folder in the zip holding the package, metadata.txt and the icon.
  (cd rs_vqa_plugin && find . -type f ! -path '*/__pycache__/*' ! -name '*.pyc' \
      -exec cp --parents {} "$stage/rs_vqa_plugin/" \;)
  cp metadata.txt LICENSE "$stage/rs_vqa_plugin/"
  # README pictures (screenshots, gallery) are not needed inside QGIS.
  (cd resources && find . -type f ! -path './screenshots/*' ! -path './gallery/*' \
      -exec cp --parents {} "$stage/rs_vqa_plugin/resources/" \;)
  if [ -d models/default ] && [ -f models/default/manifest.json ]; then
    mkdir -p "$stage/rs_vqa_plugin/models"
    cp -r models/default "$stage/rs_vqa_plugin/models/default"
  fi
  cp requirements.txt requirements-cpu.txt requirements-gpu.txt "$stage/rs_vqa_plugin/"
  rm -f "$out"
  (cd "$stage" && python3 -m zipfile -c "$out" rs_vqa_plugin)
  say "Wrote $out"
}

main() {
  local cmd="${1:-help}"
  shift || true
  case "$cmd" in
    setup) cmd_setup "$@" ;;
    test) cmd_test "$@" ;;
    demo) cmd_demo "$@" ;;
    bench) cmd_bench "$@" ;;
    screenshot) cmd_screenshot "$@" ;;
    package) cmd_package "$@" ;;
    *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; [ "$cmd" = help ] || exit 2 ;;
  esac
}

main "$@"
