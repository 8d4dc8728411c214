#!/usr/bin/env bash
# Installs what building colloquium needs on a fresh Debian machine with the Rust toolchain:
# libclang (bindgen loads it to generate RocksDB's C bindings) and a C++ compiler (RocksDB
# itself). Idempotent: apt-get runs only when something is missing, and the script fails
# loudly when a prerequisite is still absent afterwards.
#
#   scripts/bootstrap.sh          check, install what is missing, check again
#   scripts/bootstrap.sh --check  only report; exit 1 when something is missing
#
# BOOTSTRAP_LIB_DIRS (space-separated) replaces the directories searched for libclang; the
# tests point it at fake library directories.
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

# Fills the array `missing` with the Debian packages that provide what is absent.
check() {
  missing=()
  command -v c++ >/dev/null 2>&1 || missing+=(g++)
  command -v make >/dev/null 2>&1 || missing+=(make)
  find_libclang >/dev/null || missing+=(libclang-dev)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
}

check
if [ "${1:-}" = "--check" ]; then
  if [ ${#missing[@]} -gt 0 ]; then
    echo "bootstrap: missing ${missing[*]}"
    exit 1
  fi
  echo "bootstrap: ok (libclang: $(find_libclang))"
  exit 0
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  check
  if [ ${#missing[@]} -gt 0 ]; then
    echo "bootstrap: still missing after apt-get install: ${missing[*]}" >&2
    [[ " ${missing[*]} " == *" libclang-dev "* ]] &&
      echo "bootstrap: no libclang.so found in: $(lib_dirs) (set LIBCLANG_PATH to its directory)" >&2
    exit 1
  fi
fi

command -v cargo >/dev/null 2>&1 || { echo "bootstrap: cargo not found; install Rust with rustup first" >&2; exit 1; }
