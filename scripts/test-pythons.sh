#!/usr/bin/env bash
# The unit tests and the store contract suite (memory and etcd) under every other Python from
# 3.10 to 3.13 found on this machine: `python3.X` on PATH, or pyenv's. The whole suite runs
# under the default interpreter (`make pytest`); the GPU nodes' usual image has 3.10, so the
# code must not drift to 3.11-only names unnoticed.
#
# Each interpreter gets its own virtualenv, .venv-3.X, reinstalled when setup.cfg changes.
# An interpreter that is not there is reported and skipped: that is not a failure.
set -euo pipefail

default="$1"  # the default interpreter, whose version the whole suite already covered
shift
default_version="$("$default" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
pyenv_root="$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")"

find_python() {  # python$1 on PATH, else pyenv's newest; only one that runs (a pyenv shim
  local version="$1" found   # for a version not selected is on PATH but does not)
  for found in "$(command -v "python$version" 2>/dev/null)" \
      "$(ls -d "$pyenv_root/versions/$version".*/bin/"python$version" 2>/dev/null | sort -V | tail -1)"; do
    if [ -n "$found" ] && "$found" -c 'import sys' >/dev/null 2>&1; then
      echo "$found"
      return 0
    fi
  done
  return 1
}

tested=()
for version in 3.10 3.11 3.12 3.13; do
  [ "$version" = "$default_version" ] && continue
  if ! python="$(find_python "$version")"; then
    echo "test-pythons: no Python $version on this machine; skipped"
    continue
  fi
  venv=".venv-$version"
  if [ ! -f "$venv/.installed" ] || [ setup.cfg -nt "$venv/.installed" ]; then
    echo "test-pythons: installing into $venv ($python)"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q -e '.[unit]'
    touch "$venv/.installed"
  fi
  echo "test-pythons: Python $version: unit tests and the store contract suite"
  "$venv/bin/pytest" -q -p no:cacheprovider -m "not compose and (not etcd or contract)" "$@"
  tested+=("$version")
done
echo "test-pythons: passed under ${tested[*]:-no other Python} (and $default_version, the whole suite)"
