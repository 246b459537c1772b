#!/usr/bin/env bash
# A manual, developer check: NOT run in CI. It boots a real systemd (Debian bookworm made
# with debootstrap, booted with systemd-nspawn) and runs the README's "Installing as a
# service on a Pi" commands in it, as written, as a sudo user from a copy of this
# checkout; then it checks what the README and systemd/edgemeter.service promise:
#
#   - install.sh with the Pi example config (picamera2, no camera here): it returns, the
#     unit is enabled, and the journal says why the camera did not open;
#   - the README block: sudoedit (a stand-in editor switches the example to the
#     simulated odometer and a local Mosquitto), check-config as user edgemeter,
#     `systemctl restart`, `journalctl -u edgemeter -f` showing accepted readings;
#   - enabled and active, Type=notify READY, watchdog pings arriving, readings and
#     "online" retained on the broker, a `systemctl restart`;
#   - the watchdog killing and restarting a hung daemon (SIGSTOP; a runtime drop-in
#     shortens WatchdogSec= from 120 s to 10 s so the check does not wait 2 min);
#   - a configuration error: install.sh names it, the daemon exits 2, no restart;
#   - install.sh a second time: the config untouched, the service restarted;
#   - install.sh --uninstall: unit and venv gone, config and state kept.
#
# Needs: root with CAP_SYS_ADMIN (namespaces, mounts), no systemd needed on the host
# (nspawn runs with --register=no --keep-unit), network to Debian's package registry
# and to PyPI, about 1 GB in the work directory, and nothing listening on
# 127.0.0.1:1883 (the container shares the host's network for apt and pip, so its
# Mosquitto binds the host's loopback). It installs systemd-container and debootstrap
# on the host if missing. Passing runs on a shared 2-core machine took 3 to 5 minutes
# (4m34s, 3m53s, 3m55s, 3m05s; most of it debootstrap, apt and pip downloads): keep it
# out of CI unless it reliably stays far below CI's limits.
#
#   sudo bash scripts/systemd-smoke.sh [--keep] [--workdir DIR] [--mirror URL] [--readme FILE]
#
# Prints "ok"/"FAIL" per check and "N passed, N failed" at the end; exits 1 if any failed.
# --keep leaves the root file system (DIR/root) behind; the logs stay in DIR anyway.
# --readme FILE takes the commands from FILE instead of README.md (to try a change of
# the README's service section before it lands).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORKDIR=/var/tmp/edgemeter-smoke
MIRROR=http://deb.debian.org/debian
KEEP=0
MACHINE=edgemeter-smoke
# Seconds: each wait below is bounded by one of these.
BOOT_TIMEOUT_S=90
README_FOLLOW_S=20
README="$ROOT/README.md"
WATCHDOG_TEST_S=10
SHUTDOWN_TIMEOUT_S=30

while [ $# -gt 0 ]; do
  case "$1" in
    --keep) KEEP=1 ;;
    --workdir)
      WORKDIR="${2:?--workdir needs a directory}"
      shift
      ;;
    --mirror)
      MIRROR="${2:?--mirror needs a URL}"
      shift
      ;;
    --readme)
      README="$(realpath -- "${2:?--readme needs a file}")"
      shift
      ;;
    -h | --help)
      awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
      exit 0
      ;;
    *)
      printf 'systemd-smoke: unknown option %s (see --help)\n' "$1" >&2
      exit 2
      ;;
  esac
  shift
done

die() {
  printf 'systemd-smoke: error: %s\n' "$*" >&2
  exit 1
}
START=$SECONDS
say() { printf '[%4d s] %s\n' "$((SECONDS - START))" "$*"; }
PASSED=0
FAILED=0
pass() {
  PASSED=$((PASSED + 1))
  printf 'ok    %s\n' "$*"
}
fail() {
  FAILED=$((FAILED + 1))
  printf 'FAIL  %s\n' "$*"
}
# expect DESCRIPTION COMMAND...: one check.
expect() {
  local what="$1"
  shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}

[ "$(id -u)" -eq 0 ] || die "run as root: sudo bash $0 (it makes and boots a container)"
if (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
  die "something listens on 127.0.0.1:1883; the container shares this network, so its" \
    "Mosquitto could not bind: stop that broker (or run this later)"
fi
ROOTFS="$WORKDIR/root"
[ ! -e "$ROOTFS" ] || die "$ROOTFS exists (a --keep run?): remove it first: rm -rf $ROOTFS"
mkdir -p "$WORKDIR"

# --- the container -----------------------------------------------------------------------
NSPAWN_PID=""
LEADER=""
in_root() {
  nsenter -t "$LEADER" -a env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 TERM=dumb SYSTEMD_COLORS=0 SYSTEMD_PAGER= "$@" </dev/null
}
# As the Pi's user: a login shell in the checkout, the way the README is followed.
as_pi() { in_root runuser -l pi -c "cd ~/edgemeter && $1"; }
unit_property() { in_root systemctl show --property "$1" --value edgemeter.service; }

cleanup() {
  local status=$?
  if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
    if [ -n "$LEADER" ]; then in_root systemctl poweroff >/dev/null 2>&1 || true; fi
    for _ in $(seq "$SHUTDOWN_TIMEOUT_S"); do
      kill -0 "$NSPAWN_PID" 2>/dev/null || break
      sleep 1
    done
    if kill -0 "$NSPAWN_PID" 2>/dev/null; then
      say "the container did not power off in $SHUTDOWN_TIMEOUT_S s: killing it"
      kill -KILL "$NSPAWN_PID" 2>/dev/null || true
    fi
    wait "$NSPAWN_PID" 2>/dev/null || true
  fi
  if [ "$KEEP" = 0 ]; then rm -rf -- "${ROOTFS:?}"; fi
  exit "$status"
}
trap cleanup EXIT
# set -e ends the run at a failing step that is not a check: say which.
trap 'say "stopped: \"$BASH_COMMAND\" failed (line $LINENO)"' ERR

for tool in systemd-nspawn debootstrap; do
  if ! command -v "$tool" >/dev/null; then
    say "installing systemd-container and debootstrap on this machine"
    # Without recommends: libnss-mymachines would add itself to this machine's
    # /etc/nsswitch.conf, for a machined that does not run here.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends systemd-container debootstrap >/dev/null
    break
  fi
done

say "debootstrap bookworm into $ROOTFS ($MIRROR)"
# What a fresh Raspberry Pi OS Lite has that install.sh relies on: systemd as init,
# python3, sudo. Not python3-venv, pip or tesseract: the install script adds those.
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,sudo,python3,ca-certificates \
  bookworm "$ROOTFS" "$MIRROR" >"$WORKDIR/debootstrap.log" 2>&1 \
  || die "debootstrap failed: $WORKDIR/debootstrap.log"

# Certificates this machine trusts beyond Debian's (a TLS-inspecting proxy on the way to
# the registries), and pip's index if this machine uses a mirror: the container needs the
# same to reach them.
cp /usr/local/share/ca-certificates/*.crt "$ROOTFS/usr/local/share/ca-certificates/" 2>/dev/null \
  && chroot "$ROOTFS" update-ca-certificates >/dev/null 2>&1
index_url="$(pip3 config get global.index-url 2>/dev/null || true)"
case "$index_url" in
  http://* | https://*) printf '[global]\nindex-url = %s\n' "$index_url" >"$ROOTFS/etc/pip.conf" ;;
esac
echo "$MACHINE" >"$ROOTFS/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 %s\n::1 localhost\n' "$MACHINE" >"$ROOTFS/etc/hosts"
# The Pi's user: sudo without a password, like Raspberry Pi OS's first user. Not in
# group adm, like a plain Debian user: so the journal needs sudo, which the README says.
chroot "$ROOTFS" useradd --create-home --shell /bin/bash --groups sudo pi
echo 'pi ALL=(ALL) NOPASSWD:ALL' >"$ROOTFS/etc/sudoers.d/pi"
chmod 0440 "$ROOTFS/etc/sudoers.d/pi"
# The checkout as git sees it (tracked and new files, as they are now, no ignored ones).
mkdir "$ROOTFS/home/pi/edgemeter"
git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
  | tar -C "$ROOT" --null --files-from=- --ignore-failed-read -cf - 2>/dev/null \
  | tar -C "$ROOTFS/home/pi/edgemeter" -xf -
chroot "$ROOTFS" chown -R pi:pi /home/pi/edgemeter
# sudoedit's editor, standing for the person: the Pi example becomes the simulated
# odometer (its 800x600 frame has the counter at 235,257 330x86, it runs at 2 s a cycle,
# so faster than the car's 150 km/h) and the broker on this machine.
cat >"$ROOTFS/usr/local/bin/smoke-edit" <<'EOF'
#!/bin/sh
set -e
sed -i -e 's/^\(  source:\) picamera2 /\1 simulated /' -e 's/^\(  interval_s:\) 30 /\1 2  /' \
  -e 's/^\(  x:\) 880$/\1 235/' -e 's/^\(  y:\) 560$/\1 257/' \
  -e 's/^\(  width:\) 520$/\1 330/' -e 's/^\(  height:\) 140$/\1 86/' \
  -e 's/^\(  max_rate_per_hour:\) 150 /\1 5000/' -e 's/^\(  host:\) 192.0.2.20 /\1 127.0.0.1  /' "$1"
grep -q '^  source: simulated ' "$1"
grep -q '^  host: 127.0.0.1 ' "$1"
EOF
chmod 0755 "$ROOTFS/usr/local/bin/smoke-edit"

say "booting systemd in the container (systemd-nspawn --boot)"
# --register=no --keep-unit: no machined or system bus is needed on the host.
systemd-nspawn --quiet --directory "$ROOTFS" --machine "$MACHINE" --register=no --keep-unit \
  --console=read-only --boot >"$WORKDIR/console.log" 2>&1 </dev/null &
NSPAWN_PID=$!
for _ in $(seq "$BOOT_TIMEOUT_S"); do
  # (ps fails while nspawn has not forked yet.)
  LEADER="$(ps -o pid= --ppid "$NSPAWN_PID" | tr -d ' ' | head -n 1 || true)"
  if [ -n "$LEADER" ] && [ "$(cat "/proc/$LEADER/comm" 2>/dev/null)" = systemd ]; then break; fi
  LEADER=""
  kill -0 "$NSPAWN_PID" 2>/dev/null || die "systemd-nspawn exited: $(tail -n 5 "$WORKDIR/console.log")"
  sleep 1
done
[ -n "$LEADER" ] || die "no systemd in the container after $BOOT_TIMEOUT_S s: $WORKDIR/console.log"
state="$(timeout "$BOOT_TIMEOUT_S" nsenter -t "$LEADER" -a systemctl is-system-running --wait || true)"
say "systemd $(in_root systemctl --version | head -n 1 | cut -d' ' -f2) is PID 1 in the container: $state"
expect "the container booted (system state $state)" test "$state" = running -o "$state" = degraded

say "a local broker, as the README suggests: sudo apt-get install mosquitto (and its clients)"
as_pi 'sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto mosquitto-clients' \
  >"$WORKDIR/mosquitto-install.log" 2>&1 || die "apt-get install mosquitto: $WORKDIR/mosquitto-install.log"
expect "mosquitto is active" in_root systemctl is-active --quiet mosquitto

# --- the README's block -------------------------------------------------------------------
mapfile -t README_COMMANDS < <(
  awk '/^## Installing as a service on a Pi/ { s = 1; next } s && /^## / { exit }
       s && /^```sh/ { b = 1; next } b && /^```/ { exit } b' "$README" \
    | sed -e 's/[[:space:]]*#.*$//' -e '/^[[:space:]]*$/d'
)
[ "${#README_COMMANDS[@]}" -gt 0 ] || die "no sh block under README's 'Installing as a service on a Pi'"
[[ "${README_COMMANDS[0]}" == *scripts/install.sh* ]] || die "README's block no longer starts with install.sh"

config_sum() { in_root md5sum /etc/edgemeter/config.yaml | cut -d' ' -f1; }
for command in "${README_COMMANDS[@]}"; do
  say "README: $command"
  started=$SECONDS
  status=0
  case "$command" in
    *scripts/install.sh*)
      as_pi "$command" >"$WORKDIR/install-1.log" 2>&1 || status=$?
      say "  took $((SECONDS - started)) s: $(tail -n 1 "$WORKDIR/install-1.log" | cut -c1-120)"
      expect "install.sh succeeds (exit $status)" test "$status" = 0
      expect "the unit is enabled" test "$(in_root systemctl is-enabled edgemeter)" = enabled
      # The Pi example wants picamera2, which plain Debian lacks: the daemon exits 2
      # at once, and the install says why instead of hanging on `systemctl start`.
      expect "without picamera2 the unit is not active" \
        test "$(in_root systemctl is-active edgemeter)" != active
      expect "the install shows why: picamera2 cannot be imported" \
        grep -q "picamera2 cannot be imported" "$WORKDIR/install-1.log"
      expect "the journal says why, and how to fix it" \
        bash -c "nsenter -t $LEADER -a journalctl -u edgemeter --no-pager | grep -q 'apt-get install python3-picamera2'"
      ;;
    sudoedit\ *)
      as_pi "SUDO_EDITOR=smoke-edit $command" || status=$?
      expect "sudoedit changed the config (exit $status)" \
        bash -c "nsenter -t $LEADER -a grep -q '^  source: simulated ' /etc/edgemeter/config.yaml"
      expect "the config stays root:edgemeter 0640" \
        test "$(in_root stat -c '%U:%G %a' /etc/edgemeter/config.yaml)" = "root:edgemeter 640"
      ;;
    *journalctl*-f)
      as_pi "timeout $README_FOLLOW_S $command" >"$WORKDIR/journal-follow.log" 2>&1 || status=$?
      expect "'$command' follows the log (ended by timeout: exit $status)" test "$status" = 124
      expect "'$command' shows accepted readings" \
        grep -q "edgemeter.daemon: accepted value=" "$WORKDIR/journal-follow.log"
      ;;
    *)
      as_pi "$command" >"$WORKDIR/step.log" 2>&1 || status=$?
      expect "'$command' succeeds (exit $status, $((SECONDS - started)) s)" test "$status" = 0
      ;;
  esac
done

# --- the service under systemd -------------------------------------------------------------
expect "enabled" test "$(in_root systemctl is-enabled edgemeter)" = enabled
expect "active" test "$(in_root systemctl is-active edgemeter)" = active
expect "Type=notify, NotifyAccess=main" \
  test "$(unit_property Type) $(unit_property NotifyAccess)" = "notify main"
expect "ready: the status line is the daemon's (READY=1 and STATUS= arrived)" \
  test -n "$(unit_property StatusText)"
first_ping="$(unit_property WatchdogTimestampMonotonic)"
sleep 6
expect "watchdog pings arrive (WatchdogSec=$(unit_property WatchdogUSec))" \
  test "$(unit_property WatchdogTimestampMonotonic)" -gt "$first_ping"
messages="$(in_root timeout 15 mosquitto_sub -h 127.0.0.1 -t edgemeter/car/status -t edgemeter/car/reading -C 2 -W 10 -v || true)"
printf '%s\n' "$messages" | sed 's/^/      broker: /'
expect "the broker holds 'online'" grep -q '^edgemeter/car/status online$' <<<"$messages"
expect "the broker holds a reading" grep -q '^edgemeter/car/reading {"value": ' <<<"$messages"

pid_before="$(unit_property MainPID)"
say "sudo systemctl restart edgemeter"
status=0
as_pi 'sudo systemctl restart edgemeter' || status=$?
pid_after="$(unit_property MainPID)"
expect "restart: exit $status, new process ($pid_before -> $pid_after), active" \
  test "$status" = 0 -a "$pid_after" != "$pid_before" -a "$(in_root systemctl is-active edgemeter)" = active

say "watchdog: WatchdogSec=$WATCHDOG_TEST_S (runtime drop-in), then the daemon is frozen with SIGSTOP"
in_root mkdir -p /run/systemd/system/edgemeter.service.d
# (in_root gives commands no stdin: the file is written inside.)
in_root sh -c "printf '[Service]\nWatchdogSec=%s\n' $WATCHDOG_TEST_S \
  >/run/systemd/system/edgemeter.service.d/smoke-watchdog.conf"
in_root systemctl daemon-reload
in_root systemctl restart edgemeter
frozen="$(unit_property MainPID)"
in_root bash -c "kill -STOP $frozen"
restarted=""
for _ in $(seq $((WATCHDOG_TEST_S * 4))); do
  sleep 1
  pid="$(unit_property MainPID)"
  if [ "$pid" != 0 ] && [ "$pid" != "$frozen" ] && [ "$(in_root systemctl is-active edgemeter)" = active ]; then
    restarted="$pid"
    break
  fi
done
expect "the watchdog killed the hung daemon (journal: 'Watchdog timeout')" \
  bash -c "nsenter -t $LEADER -a journalctl -u edgemeter --no-pager | grep -q 'Watchdog timeout'"
expect "and systemd restarted it (pid $frozen -> ${restarted:-none})" test -n "$restarted"
in_root rm /run/systemd/system/edgemeter.service.d/smoke-watchdog.conf
in_root systemctl daemon-reload
in_root systemctl restart edgemeter

say "a configuration error (window.width: -3): exit 2 and no restart"
in_root cp -p /etc/edgemeter/config.yaml /etc/edgemeter/config.yaml.smoke-good
in_root sed -i 's/^\(  width:\) 330$/\1 -3/' /etc/edgemeter/config.yaml
pid_before="$(unit_property MainPID)"
status=0
as_pi "${README_COMMANDS[0]}" >"$WORKDIR/install-bad-config.log" 2>&1 || status=$?
expect "install.sh names the problem (exit $status)" \
  grep -q 'window.width: must be a positive integer, got -3' "$WORKDIR/install-bad-config.log"
expect "and leaves the running service alone" test "$(unit_property MainPID)" = "$pid_before"
expect "and says so" grep -q "keeps running the previous version" "$WORKDIR/install-bad-config.log"
expect "without a misleading chown hint (the file is readable)" \
  test "$(grep -c 'sudo chown' "$WORKDIR/install-bad-config.log")" = 0
since="$(date +%s)"
status=0
as_pi 'sudo systemctl restart edgemeter' >/dev/null 2>&1 || status=$?
expect "'sudo systemctl restart edgemeter' with it fails (exit $status)" test "$status" != 0
# RestartSec=10: a restart, had there been one, would be in the journal by now.
sleep 15
expect "the daemon exited with status 2 ($(unit_property ExecMainStatus)) and is failed" \
  test "$(unit_property ExecMainStatus) $(unit_property ActiveState)" = "2 failed"
journal_since="$(in_root journalctl -u edgemeter --no-pager -o cat --since "@$since")"
expect "systemd did not restart it" test "$(grep -c 'Scheduled restart' <<<"$journal_since")" = 0
expect "the journal names the key" grep -q 'window.width: must be a positive integer' <<<"$journal_since"
in_root mv /etc/edgemeter/config.yaml.smoke-good /etc/edgemeter/config.yaml
in_root systemctl restart edgemeter

say "install.sh a second time"
config_before="$(config_sum)"
pid_before="$(unit_property MainPID)"
started=$SECONDS
status=0
as_pi "${README_COMMANDS[0]}" >"$WORKDIR/install-2.log" 2>&1 || status=$?
say "  took $((SECONDS - started)) s"
expect "the second install succeeds (exit $status)" test "$status" = 0
expect "it keeps the edited config" test "$(config_sum)" = "$config_before"
expect "it restarts the running service on the new version" \
  test "$(unit_property MainPID)" != "$pid_before" -a "$(in_root systemctl is-active edgemeter)" = active
expect "it says the service is running" grep -q "the service is running" "$WORKDIR/install-2.log"

say "install.sh --uninstall"
started=$SECONDS
status=0
as_pi "${README_COMMANDS[0]} --uninstall" >"$WORKDIR/uninstall.log" 2>&1 || status=$?
say "  took $((SECONDS - started)) s"
expect "uninstall succeeds (exit $status)" test "$status" = 0
expect "the service is stopped" test "$(in_root systemctl is-active edgemeter || true)" = inactive
expect "the unit file is gone" test ! -e "$ROOTFS/etc/systemd/system/edgemeter.service"
expect "the venv is gone" test ! -e "$ROOTFS/opt/edgemeter"
expect "the config is kept, unchanged" test "$(config_sum)" = "$config_before"
expect "the state is kept (state.json with the last value)" \
  grep -q '"value": ' "$ROOTFS/var/lib/edgemeter/state.json"

say "done in $((SECONDS - START)) s; logs in $WORKDIR"
printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
if [ "$FAILED" != 0 ]; then exit 1; fi
