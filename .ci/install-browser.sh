#!/usr/bin/env bash
# Make the browser test runnable: Debian's Chromium (Playwright drives it; `playwright
# install` cannot download here) and Graphviz's `dot` for the DAG view. Idempotent:
# does nothing when both are already installed. The Python side (jupyterlab,
# playwright) comes with `pip install '.[dev]'`.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
  || missing+=(chromium)
command -v dot >/dev/null 2>&1 || missing+=(graphviz)

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-browser: chromium and graphviz already installed"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
echo "install-browser: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" fonts-dejavu-core
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1
