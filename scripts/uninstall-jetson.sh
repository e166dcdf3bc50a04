#!/usr/bin/env bash
# Removes what scripts/install-jetson.sh installed.
#
#   sudo ./scripts/uninstall-jetson.sh          # service, unit and /opt/maskgate
#   sudo ./scripts/uninstall-jetson.sh --purge  # also /etc/maskgate, /var/lib/maskgate
#                                               # (engines, events) and the user
# System packages stay: JetPack and other software use them.
set -euo pipefail

PREFIX=/opt/maskgate
CONF_DIR=/etc/maskgate
STATE_DIR=/var/lib/maskgate
SVC_USER=maskgate
UNIT=/etc/systemd/system/maskgate.service
TEMPLATE_UNIT=/etc/systemd/system/maskgate@.service
purge=0

die() {
  echo "uninstall-jetson: $*" >&2
  exit 1
}

for arg in "$@"; do
  case "$arg" in
    --purge) purge=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $arg (see --help)" ;;
  esac
done

[ "$(id -u)" -eq 0 ] || die "run as root: sudo $0 $*"

if command -v systemctl >/dev/null && { [ -e "$UNIT" ] || [ -e "$TEMPLATE_UNIT" ]; }; then
  echo "==> stopping and disabling maskgate and its instances (maskgate@NAME)"
  # Stopping sends SIGTERM: the service flushes its events and closes its outputs.
  systemctl disable --now maskgate.service 2>/dev/null || true
  for unit in $(systemctl list-units --all --plain --no-legend 'maskgate@*.service' | awk '{print $1}'); do
    systemctl disable --now "$unit" || true
  done
  rm -f "$UNIT" "$TEMPLATE_UNIT" /etc/systemd/system/multi-user.target.wants/maskgate@*.service
  systemctl daemon-reload
  systemctl reset-failed 'maskgate*' 2>/dev/null || true
fi
rm -f /etc/logrotate.d/maskgate  # older versions rotated the events with logrotate

echo "==> removing $PREFIX"
rm -rf "$PREFIX"

if [ "$purge" -eq 1 ]; then
  echo "==> purging $CONF_DIR, $STATE_DIR and user $SVC_USER"
  rm -rf "$CONF_DIR" "$STATE_DIR" /run/maskgate /run/maskgate-*
  if id "$SVC_USER" >/dev/null 2>&1; then
    userdel "$SVC_USER"
  fi
else
  echo "kept $CONF_DIR (settings), $STATE_DIR (engines, events) and user $SVC_USER;"
  echo "remove them with --purge"
fi
