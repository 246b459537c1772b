#!/usr/bin/env bash
# Install what a fresh Debian / Raspberry Pi OS machine lacks, and make the venv.
# Sourced by scripts/demo.sh and scripts/test.sh. Usage: deps.sh [--dev | --train]
# (--train: --dev and the typefaces scripts/train_classifier.py draws)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EDGEMETER_VENV:-$ROOT/.venv}"
DEV=0
TRAIN=0
[ "${1:-}" = "--dev" ] && DEV=1
[ "${1:-}" = "--train" ] && DEV=1 && TRAIN=1

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

packages=(tesseract-ocr mosquitto mosquitto-clients python3-venv)
if [ "$DEV" = 1 ]; then
  # systemd-analyze checks the unit; the fonts let the renderer draw many counter styles.
  packages+=(systemd shellcheck chromium fonts-dejavu-core fonts-liberation fonts-noto-core fonts-roboto fonts-dseg faketime e2fsprogs)
fi
if [ "$TRAIN" = 1 ]; then
  packages+=(fonts-dejavu-extra fonts-freefont-ttf fonts-urw-base35 fonts-open-sans fonts-lato
    fonts-cantarell fonts-crosextra-carlito fonts-inconsolata fonts-hack fonts-b612
    fonts-comic-neue fonts-oxygen fonts-jetbrains-mono fonts-firacode fonts-quicksand)
fi
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "edgemeter: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "edgemeter: creating the venv in $VENV"
  # On a Pi, --system-site-packages lets the venv see apt's python3-picamera2.
  python3 -m venv --system-site-packages "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
if [ "$DEV" = 1 ]; then
  "$VENV/bin/python" -m pip install -q -e "${ROOT}[dev]"
else
  # tesserocr (the in-process engine, ~20x faster than a tesseract process per call)
  # ships wheels for x86_64 and aarch64; where none fits, pytesseract does the work.
  "$VENV/bin/python" -m pip install -q "${ROOT}[fast]" 2>/dev/null \
    || "$VENV/bin/python" -m pip install -q "$ROOT"
fi
