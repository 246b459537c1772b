#!/usr/bin/env bash
# Install edgemeter as a systemd service on Raspberry Pi OS bookworm (or any Debian with
# systemd), from the checkout this script lives in. Safe to run again: it upgrades the
# package and the unit, and never touches an existing /etc/edgemeter/config.yaml.
#
#   sudo bash scripts/install.sh               install or upgrade, start the service
#   sudo bash scripts/install.sh --uninstall   remove the service and the venv
#   bash scripts/install.sh --help             every option
#
# Layout (README "Installing as a service on a Pi", systemd/edgemeter.service):
#   /opt/edgemeter/venv              the program: a venv that also sees apt's packages
#   /etc/edgemeter/config.yaml       the config, root:edgemeter 0640 (may hold secrets)
#   /var/lib/edgemeter               state and outbox (home of the system user edgemeter)
#   /etc/systemd/system/edgemeter.service
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
UNIT_NAME=edgemeter.service
SERVICE_USER=edgemeter
# Tesseract, and the venv module (Debian splits it out of python3). python3-picamera2 is
# added when the package lists have it (Raspberry Pi OS); mosquitto is deliberately not
# installed: the broker is usually elsewhere (the final message says how to add one).
BASE_PACKAGES=(tesseract-ocr python3-venv python3-pip)
# The longest the install waits for the service to report ready (READY=1: camera open).
# The daemon waits for its camera without a limit of its own, so a camera that cannot
# open keeps the unit "activating" for its TimeoutStartSec= (90 s) and a plain
# `systemctl start` with it: the install says so instead of hanging.
START_WAIT_S=30
# Installed next to python3-picamera2, and then used instead of pip's copies; see
# install_requirements_for_picamera2.
PICAMERA2_PACKAGES=(python3-picamera2 python3-numpy python3-opencv)

# sudo keeps the caller's umask; a umask of 077 would leave the venv unreadable to the
# service user and the daemon unable to import anything.
umask 0022
# apt must never stop to ask (e.g. a debconf prompt) in an unattended install.
export DEBIAN_FRONTEND=noninteractive
# pip warns at length when run as root; here root installing into a venv is the point.
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

usage() {
  cat <<EOF
Usage: sudo bash scripts/install.sh [--uninstall] [--prefix DIR] [--no-venv] [--dry-run]

Install edgemeter from this checkout ($ROOT) as a systemd service:
apt packages (tesseract-ocr, python3-venv, python3-pip, and python3-picamera2 with apt's
numpy and OpenCV where the package exists), the system user $SERVICE_USER (group video),
the venv /opt/edgemeter/venv, /etc/edgemeter/config.yaml from the example (only if there
is none), the unit /etc/systemd/system/$UNIT_NAME, then enable and start it.
Running it again upgrades the package and the unit; an existing config is kept.

Options:
  --uninstall   stop, disable and remove the unit and the venv; keep /etc/edgemeter
                (config), /var/lib/edgemeter (state), the user and the apt packages
  --prefix DIR  install under DIR instead of / (DIR/etc/edgemeter, DIR/opt/edgemeter,
                DIR/etc/systemd/system, DIR/var/lib/edgemeter), for tests and CI; apt,
                useradd, chown and systemctl are not run but printed ("would run: ...").
                Needs no root.
  --no-venv     with --prefix or --dry-run: skip the venv (the slow step)
  --dry-run     print every action, change nothing. Needs no root.
  -h, --help    this text

No MQTT broker is installed. For one on this machine: sudo apt-get install mosquitto
EOF
}

say() { printf 'edgemeter: %s\n' "$*"; }
warn() { printf 'edgemeter: warning: %s\n' "$*" >&2; }
die() {
  printf 'edgemeter: error: %s\n' "$*" >&2
  exit 1
}

# A command as a shell would need it typed, for "would run:" lines.
quoted() {
  local out="" arg
  for arg in "$@"; do out+="$(printf '%q' "$arg") "; done
  printf '%s' "${out% }"
}

# Changes to files under the prefix: done, except with --dry-run.
run() {
  if [ "$DRY_RUN" = 1 ]; then
    say "would run: $(quoted "$@")"
  else
    "$@"
  fi
}

# Changes to the system itself (apt, users, ownership, systemd): also only printed with
# --prefix, where the fake root has no package database, users or service manager.
run_system() {
  if [ "$DRY_RUN" = 1 ] || [ -n "$PREFIX" ]; then
    say "would run: $(quoted "$@")"
  else
    "$@"
  fi
}

dpkg_installed() {
  # shellcheck disable=SC2016  # ${Status} is dpkg-query's field syntax, not the shell's
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

apt_has_package() {
  command -v apt-cache >/dev/null && apt-cache show "$1" >/dev/null 2>&1
}

apt_lists_empty() {
  ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null
}

systemd_running() {
  # sd_booted(): systemd is PID 1 exactly when this directory exists.
  [ -d /run/systemd/system ]
}

# --- options ----------------------------------------------------------------------------
ARGUMENTS=("$@")
UNINSTALL=0
DRY_RUN=0
NO_VENV=0
PREFIX=""
while [ $# -gt 0 ]; do
  case "$1" in
    --uninstall) UNINSTALL=1 ;;
    --dry-run) DRY_RUN=1 ;;
    --no-venv) NO_VENV=1 ;;
    --prefix)
      if [ $# -lt 2 ] || [ -z "$2" ]; then die "--prefix needs a directory"; fi
      PREFIX="$2"
      shift
      ;;
    --prefix=*)
      PREFIX="${1#--prefix=}"
      [ -n "$PREFIX" ] || die "--prefix needs a directory"
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      printf 'edgemeter: error: unknown option %s (see --help)\n' "$1" >&2
      exit 2
      ;;
  esac
  shift
done

if [ -n "$PREFIX" ]; then
  PREFIX="$(realpath -m -- "$PREFIX")"
  [ "$PREFIX" != / ] || die "--prefix / is a real install: leave out --prefix (and use sudo)"
fi
if [ "$NO_VENV" = 1 ] && [ -z "$PREFIX" ] && [ "$DRY_RUN" = 0 ]; then
  die "--no-venv only with --prefix or --dry-run: the service cannot run without its venv"
fi
if [ -z "$PREFIX" ] && [ "$DRY_RUN" = 0 ] && [ "$(id -u)" -ne 0 ]; then
  die "run with sudo: sudo $(quoted bash "$ROOT/scripts/install.sh" "${ARGUMENTS[@]}")" \
    "(or --prefix DIR for a test install without root)"
fi
for file in pyproject.toml config.yaml "systemd/$UNIT_NAME"; do
  [ -f "$ROOT/$file" ] || die "$ROOT/$file is missing: run the install.sh of an edgemeter checkout"
done

ETC_DIR="$PREFIX/etc/edgemeter"
CONFIG="$ETC_DIR/config.yaml"
OPT_DIR="$PREFIX/opt/edgemeter"
VENV="$OPT_DIR/venv"
STATE_DIR="$PREFIX/var/lib/edgemeter"
UNIT_DIR="$PREFIX/etc/systemd/system"
UNIT="$UNIT_DIR/$UNIT_NAME"
# The unit's ExecStart= and the user's home name the real paths, whatever the prefix.
HOME_DIR=/var/lib/edgemeter
# apt's packages (picamera2, libcamera) are built for Debian's python3; under sudo,
# `python3` is that one anyway, but a developer's PATH may name another (pyenv).
PYTHON=/usr/bin/python3
[ -x "$PYTHON" ] || PYTHON="$(command -v python3 || true)"

STAGE=""
cleanup() { if [ -n "$STAGE" ]; then rm -rf -- "$STAGE"; fi; }
trap cleanup EXIT

# --- install steps ----------------------------------------------------------------------

# Sets USE_APT_VISION=1 when the venv must take numpy and OpenCV from apt (picamera2).
USE_APT_VISION=0
install_packages() {
  local packages=("${BASE_PACKAGES[@]}") missing=0 pkg
  if [ -z "$PREFIX" ]; then
    command -v apt-get >/dev/null \
      || die "apt-get not found: this script is for Debian and Raspberry Pi OS"
    for pkg in "${BASE_PACKAGES[@]}"; do dpkg_installed "$pkg" || missing=1; done
  else
    missing=1 # a prefix stands for a fresh machine
  fi
  # Fresh lists are only fetched when something is missing (a re-run stays offline), or
  # when there are none at all, since then not even python3-picamera2 could be found.
  if [ "$missing" = 1 ] || { [ -z "$PREFIX" ] && apt_lists_empty; }; then
    run_system apt-get -q update
  fi
  if dpkg_installed python3-picamera2 || apt_has_package python3-picamera2; then
    packages+=("${PICAMERA2_PACKAGES[@]}")
    USE_APT_VISION=1
    if [ -n "$PREFIX" ]; then
      # Nothing is installed with --prefix: the venv can only lean on what is there.
      for pkg in "${PICAMERA2_PACKAGES[@]}"; do dpkg_installed "$pkg" || USE_APT_VISION=0; done
    fi
  else
    say "python3-picamera2 is not in the package lists (plain Debian, not Raspberry Pi OS):" \
      "skipped; camera.source picamera2 will not work, opencv and files do"
  fi
  run_system apt-get install -y -q --no-install-recommends "${packages[@]}"
}

install_user() {
  # --force: succeed when the group exists (it does on Raspberry Pi OS: the camera nodes
  # belong to it).
  run_system groupadd --system --force video
  if [ -z "$PREFIX" ] && id -u "$SERVICE_USER" >/dev/null 2>&1; then
    say "user $SERVICE_USER exists; making sure it is in group video"
    run_system usermod --append --groups video "$SERVICE_USER"
    return
  fi
  local group_option=(--user-group)
  # A group left behind by an earlier, interrupted install would make --user-group fail.
  if [ -z "$PREFIX" ] && getent group "$SERVICE_USER" >/dev/null; then
    group_option=(--gid "$SERVICE_USER")
  fi
  # No home created by useradd (it would copy /etc/skel into the state directory); the
  # directory itself is made below, and systemd's StateDirectory= manages it from then on.
  run_system useradd --system "${group_option[@]}" --groups video --home-dir "$HOME_DIR" \
    --no-create-home --shell /usr/sbin/nologin --comment "edgemeter counter reader" \
    "$SERVICE_USER"
}

# Only missing directories are made: a mode the admin chose for /etc/edgemeter stays.
install_directories() {
  local dir
  for dir in "$ETC_DIR" "$OPT_DIR" "$UNIT_DIR"; do
    if [ ! -d "$dir" ]; then run install -d -m 0755 "$dir"; fi
  done
  if [ ! -d "$STATE_DIR" ]; then
    # Same owner and mode as the unit's StateDirectory=/StateDirectoryMode= give it.
    run install -d -m 0750 "$STATE_DIR"
    run_system chown "$SERVICE_USER:$SERVICE_USER" "$STATE_DIR"
  fi
}

# The venv is usable when it sees the system's packages and belongs to the Python that
# is there now (after an upgrade to a new Python its lib/pythonX.Y no longer matches).
venv_usable() {
  local version
  [ -x "$VENV/bin/python" ] || return 1
  grep -qx 'include-system-site-packages = true' "$VENV/pyvenv.cfg" 2>/dev/null || return 1
  version="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" || return 1
  [ -d "$VENV/lib/python$version/site-packages" ] && "$VENV/bin/python" -c '' 2>/dev/null
}

# Copies the checkout to a temporary directory: pip builds a local project in place, and
# as root that would leave root-owned build/ and *.egg-info in the user's checkout (which
# then break the user's own `pip install -e .`). Version control, venvs and caches stay
# behind.
stage_checkout() {
  STAGE="$(mktemp -d "${TMPDIR:-/tmp}/edgemeter-install.XXXXXX")"
  # tar's status 1 only means a file changed while it was read (someone saving a file in
  # the checkout); the copy is still whole.
  {
    tar -C "$ROOT" --exclude=.git --exclude=.venv --exclude=venv --exclude=build --exclude=dist \
      --exclude='*.egg-info' --exclude=__pycache__ --exclude='.*_cache' \
      --exclude=.hypothesis --warning=no-file-changed -cf - . || [ "$?" = 1 ]
  } | tar -C "$STAGE" -xf -
}

# The project's requirements from its pyproject.toml (the base ones, or those of one
# extra), one a line, without OpenCV: see install_requirements_for_picamera2.
requirements_without_opencv() {
  "$VENV/bin/python" - "$STAGE/pyproject.toml" "$@" <<'PY'
import re
import sys
import tomllib

with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)["project"]
extras = sys.argv[2:]
if extras:
    requirements = project.get("optional-dependencies", {}).get(extras[0], [])
else:
    requirements = project.get("dependencies", [])
for requirement in requirements:
    name = re.split(r"[^A-Za-z0-9._-]", requirement, maxsplit=1)[0].lower()
    if not name.startswith("opencv"):
        print(requirement)
PY
}

pip_install() {
  "$VENV/bin/python" -m pip install --quiet "$@"
}

# tesserocr (the `fast` extra: in-process OCR, ~20x faster than a tesseract process per
# call) has wheels for x86_64 and aarch64 only; elsewhere its build fails and pytesseract
# does the work.
# Arguments: two lists of requirements (one a line): with and without the fast extra.
pip_install_with_fast_fallback() {
  local with_fast=() without_fast=() line log="$STAGE/pip-fast.log"
  while IFS= read -r line; do
    if [ -n "$line" ]; then with_fast+=("$line"); fi
  done <<<"$1"
  while IFS= read -r line; do
    if [ -n "$line" ]; then without_fast+=("$line"); fi
  done <<<"$2"
  if pip_install "${with_fast[@]}" 2>"$log"; then
    return
  fi
  warn "the fast OCR engine (tesserocr) did not install, falling back to pytesseract:"
  tail -n 3 "$log" >&2
  pip_install "${without_fast[@]}" \
    || die "pip could not install edgemeter into $VENV (its messages are above): is the" \
      "package index reachable from here? (\`pip config list\` names a mirror, if any)"
}

# The PI-NOTES pitfall: apt's picamera2 (and simplejpeg, libcamera's bindings) are built
# against apt's numpy 1.x. If pip put numpy 2 into this --system-site-packages venv (a
# new opencv-python-headless wheel pulls it in), the venv's numpy would shadow apt's and
# picamera2 would fail with "numpy.dtype size changed". So where picamera2 comes from apt:
# - numpy: apt's python3-numpy, pinned to its exact version in a constraints file that
#   the venv's own pip.conf names, so a later `pip install -U ...` in this venv cannot
#   replace it either;
# - OpenCV: apt's python3-opencv (built against that numpy, and available on 32-bit
#   Pi OS where PyPI has no wheel), so opencv-python-headless is left out: a constraint
#   can pin a package but not forbid one, hence the requirements are installed from
#   pyproject.toml without it, and the project itself with --no-deps.
install_requirements_for_picamera2() {
  local numpy_version shadowing requirements fast
  numpy_version="$("$PYTHON" -c 'import numpy; print(numpy.__version__)')" \
    || die "apt's python3-numpy is not importable by $PYTHON"
  printf '# Written by scripts/install.sh: keep apt numpy (picamera2 is built against it).\nnumpy==%s\n' \
    "$numpy_version" >"$VENV/constraints.txt"
  printf '[install]\nconstraint = %s\n' "$VENV/constraints.txt" >"$VENV/pip.conf"
  say "keeping apt's numpy $numpy_version and OpenCV for picamera2 (pinned in $VENV/constraints.txt)"
  # Copies that an earlier install put into the venv itself would shadow apt's.
  shadowing="$("$VENV/bin/python" - <<'PY'
import importlib.metadata as metadata
import sys

for name in ("numpy", "opencv-python-headless", "opencv-python", "opencv-contrib-python"):
    try:
        location = str(metadata.distribution(name).locate_file(""))
    except metadata.PackageNotFoundError:
        continue
    if location.startswith(sys.prefix):
        print(name)
PY
  )"
  if [ -n "$shadowing" ]; then
    say "removing the venv's own ${shadowing//$'\n'/, } (apt's are used)"
    # shellcheck disable=SC2086  # one package name a word
    "$VENV/bin/python" -m pip uninstall --quiet --yes $shadowing
  fi
  requirements="$(requirements_without_opencv)"
  fast="$(requirements_without_opencv fast)"
  pip_install_with_fast_fallback "$requirements"$'\n'"$fast" "$requirements"
  pip_install --no-deps "$STAGE"
}

install_venv() {
  if [ "$NO_VENV" = 1 ]; then
    say "skipping the venv (--no-venv): $VENV"
    return
  fi
  [ -n "$PYTHON" ] || die "python3 not found (apt-get install python3-venv)"
  if venv_usable; then
    say "upgrading the venv $VENV"
  else
    # --system-site-packages: apt's python3-picamera2 and libcamera bindings are visible.
    run "$PYTHON" -m venv --clear --system-site-packages "$VENV"
  fi
  if [ "$DRY_RUN" = 1 ]; then
    if [ "$USE_APT_VISION" = 1 ]; then
      say "would pin numpy to apt's version in $VENV/constraints.txt and use apt's OpenCV"
    fi
    say "would run: $(quoted "$VENV/bin/python" -m pip install "${ROOT}[fast]") (without [fast] if that fails)"
    return
  fi
  say "installing edgemeter from $ROOT into $VENV (a few minutes on a Pi)"
  stage_checkout
  if [ "$USE_APT_VISION" = 1 ]; then
    install_requirements_for_picamera2
  else
    rm -f -- "$VENV/constraints.txt" "$VENV/pip.conf"
    pip_install_with_fast_fallback "${STAGE}[fast]" "$STAGE"
  fi
  "$VENV/bin/edgemeter" --version >/dev/null || die "$VENV/bin/edgemeter does not run"
  "$VENV/bin/python" -c 'import cv2, numpy' \
    || die "OpenCV or numpy cannot be imported in $VENV (see above)"
  if [ "$USE_APT_VISION" = 1 ] && ! "$VENV/bin/python" -c 'import picamera2' 2>/dev/null; then
    warn "picamera2 cannot be imported in the venv: $VENV/bin/python -c 'import picamera2'"
  fi
  say "installed $("$VENV/bin/edgemeter" --version)"
}

install_config() {
  if [ -e "$CONFIG" ]; then
    say "keeping the existing $CONFIG (never overwritten)"
    return
  fi
  run install -m 0640 "$ROOT/config.yaml" "$CONFIG"
  # Group-readable by the service only: the config may name a password file or hold
  # other site details.
  run_system chown "root:$SERVICE_USER" "$CONFIG"
  if [ "$DRY_RUN" = 0 ]; then
    say "created $CONFIG from the example: edit the camera, window and mqtt.host"
  fi
}

# Validates the config as the service will read it (as its user, when installing for
# real), so a typo or an unreadable file shows now and not as a failed start.
CONFIG_OK=1
check_config() {
  local output
  if [ "$DRY_RUN" = 1 ] || [ "$NO_VENV" = 1 ]; then
    return
  fi
  local command=("$VENV/bin/edgemeter" check-config "$CONFIG")
  if [ -z "$PREFIX" ]; then
    command=(runuser -u "$SERVICE_USER" -- "${command[@]}")
  fi
  if ! output="$("${command[@]}" 2>&1 >/dev/null)"; then
    CONFIG_OK=0
    warn "$CONFIG does not pass check-config yet:"
    printf '%s\n' "$output" >&2
    # Only when the service's user cannot read it: for a wrong value this would mislead.
    if [ -z "$PREFIX" ] && ! runuser -u "$SERVICE_USER" -- test -r "$CONFIG"; then
      say "(checked as user $SERVICE_USER, as the service reads it; it needs" \
        "root:$SERVICE_USER 0640: sudo chown root:$SERVICE_USER $CONFIG && sudo chmod 0640 $CONFIG)"
    fi
  fi
}

# The service's last log lines, for a start that did not go well.
show_service_log() {
  local lines
  lines="$(journalctl --unit "$UNIT_NAME" --lines 40 --no-pager --output cat 2>/dev/null || true)"
  # The daemon's ERROR lines name the problem and its fix; the shutdown lines after
  # them do not, so the errors come first, then how it ended.
  { grep -E '^(ERROR|CRITICAL) ' <<<"$lines" | tail -n 3 || true; tail -n 3 <<<"$lines"; } >&2
  say "the whole log: sudo journalctl -u edgemeter -f"
}

# Starts (start) or restarts (restart) the service and waits at most START_WAIT_S for it
# to report ready. A start that fails or does not finish (no camera attached yet, say) is
# the service's problem to report, not a failed install: the files are all in place.
start_service() {
  local action="$1" status=0 text limit
  if [ "$DRY_RUN" = 1 ] || [ -n "$PREFIX" ]; then
    say "would run: $(quoted systemctl "$action" "$UNIT_NAME")"
    return
  fi
  # After 5 failed starts in 10 min the unit refuses to start at all ("Start request
  # repeated too quickly") until this, however good the fix the admin came back with.
  systemctl reset-failed "$UNIT_NAME" 2>/dev/null || true
  local doing=starting
  if [ "$action" = restart ]; then doing=restarting; fi
  say "$doing the service; waiting up to $START_WAIT_S s for it to report ready"
  # Ending the waiting systemctl leaves its start job to carry on in systemd.
  timeout "$START_WAIT_S" systemctl "$action" "$UNIT_NAME" || status=$?
  if [ "$status" = 0 ]; then
    text="$(systemctl show --property StatusText --value "$UNIT_NAME" 2>/dev/null || true)"
    say "the service is running${text:+ ($text)}"
  elif [ "$status" = 124 ]; then
    limit="$(systemctl show --property TimeoutStartUSec --value "$UNIT_NAME" 2>/dev/null || true)"
    warn "edgemeter has not reported ready after $START_WAIT_S s: it is still waiting for" \
      "its camera (systemd gives it ${limit:-TimeoutStartSec=}, then restarts it). Its last lines:"
    show_service_log
  else
    warn "edgemeter did not start. Its last lines:"
    show_service_log
  fi
}

install_unit() {
  # Always replaced: it is ours. Site changes belong in a drop-in (systemctl edit).
  run install -m 0644 "$ROOT/systemd/$UNIT_NAME" "$UNIT"
  if [ -z "$PREFIX" ] && ! systemd_running; then
    say "systemd is not running as PID 1 here (a container?): skipping systemctl;" \
      "on a machine with systemd: systemctl daemon-reload && systemctl enable --now edgemeter"
    return
  fi
  local was_active=0
  if [ -z "$PREFIX" ] && systemctl is-active --quiet "$UNIT_NAME"; then was_active=1; fi
  run_system systemctl daemon-reload
  run_system systemctl enable "$UNIT_NAME"
  if [ "$CONFIG_OK" = 0 ] && [ "$was_active" = 1 ]; then
    # Restarting would only end in exit status 2 (configuration error) and no meter.
    say "not restarted: edgemeter keeps running the previous version and configuration;" \
      "fix $CONFIG, then: sudo systemctl restart edgemeter"
  elif [ "$CONFIG_OK" = 0 ]; then
    say "enabled but not started: fix $CONFIG, then: sudo systemctl start edgemeter"
  elif [ "$was_active" = 1 ]; then
    # It was running the previous version: load the new one.
    start_service restart
  else
    start_service start
  fi
}

do_install() {
  install_packages
  install_user
  install_directories
  install_venv
  install_config
  check_config
  install_unit
  # As the service's user: it also proves that user can read the file.
  local sudo="sudo " as_user="sudo -u $SERVICE_USER "
  if [ -n "$PREFIX" ]; then
    sudo=""
    as_user=""
  fi
  if [ -n "$PREFIX" ] || ! dpkg_installed mosquitto; then
    say "no MQTT broker was installed: set mqtt.host to yours, or run one here with" \
      "'sudo apt-get install mosquitto' (it listens on 127.0.0.1:1883; mqtt.host: 127.0.0.1)"
  fi
  say "after editing the config: ${sudo}systemctl restart edgemeter"
  say "done. Config: $CONFIG, check it with: ${as_user}$VENV/bin/edgemeter check-config" \
    "$CONFIG; watch the logs: ${sudo}journalctl -u edgemeter -f"
}

# --- uninstall --------------------------------------------------------------------------
do_uninstall() {
  if [ -e "$UNIT" ]; then
    if [ -n "$PREFIX" ] || systemd_running; then
      run_system systemctl disable --now "$UNIT_NAME" \
        || warn "systemctl disable --now $UNIT_NAME failed; removing the files anyway"
    else
      say "systemd is not running as PID 1 here (a container?): skipping systemctl"
    fi
    run rm -f -- "$UNIT"
    if [ -n "$PREFIX" ] || systemd_running; then
      run_system systemctl daemon-reload
      # Forget a failed state, if any, so `systemctl --failed` does not list a ghost.
      if [ -z "$PREFIX" ] && [ "$DRY_RUN" = 0 ]; then
        systemctl reset-failed "$UNIT_NAME" 2>/dev/null || true
      fi
    fi
  else
    say "no unit at $UNIT"
  fi
  if [ -e "$VENV" ]; then
    run rm -rf -- "${VENV:?}"
  else
    say "no venv at $VENV"
  fi
  if [ -d "$OPT_DIR" ]; then run rmdir --ignore-fail-on-non-empty -- "$OPT_DIR"; fi
  if [ -d "$UNIT_DIR/$UNIT_NAME.d" ]; then
    say "kept your drop-ins in $UNIT_DIR/$UNIT_NAME.d"
  fi
  say "the service and the venv are gone. Kept $ETC_DIR (config) and $STATE_DIR (state:" \
    "last accepted reading, outbox), the user $SERVICE_USER and the apt packages."
  say "to remove those too: sudo rm -r $ETC_DIR $STATE_DIR && sudo userdel $SERVICE_USER"
}

if [ "$DRY_RUN" = 1 ]; then
  say "dry run: nothing is changed"
fi
if [ "$UNINSTALL" = 1 ]; then
  do_uninstall
else
  do_install
fi
