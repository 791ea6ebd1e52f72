#!/bin/bash
# chroot-smoke.sh DEB_DIR [MIRROR [ROOT]]
# Installs the fwengine .deb from DEB_DIR into a throwaway Debian 12 chroot (debootstrap, minbase) and
# runs what a fresh install must do: --version, plugins, and check on the shipped default config.
# Needs root, debootstrap and network access to MIRROR (default http://deb.debian.org/debian).
# ROOT: a base system debootstrap already made there (packaging/tests/deb.sh makes it while the package
# builds); it is used up and removed like one made here.
set -euo pipefail
deb_dir=$(realpath "$1")
mirror=${2:-http://deb.debian.org/debian}
[ "$(id -u)" = 0 ] || { echo "$0: run as root (debootstrap and chroot)" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "$0: apt-get install debootstrap" >&2; exit 2; }
debs=("$deb_dir"/fwengine_*.deb)
deb=${debs[0]}
[ -f "$deb" ] || { echo "$0: no fwengine_*.deb in $deb_dir" >&2; exit 2; }

root=${3:-$(mktemp -d /tmp/fwengine-chroot.XXXXXX)}
cleanup() {
  mountpoint -q "$root/proc" && umount "$root/proc"
  rm -rf --one-file-system "$root" "$root.log"
}
trap cleanup EXIT

if [ -z "${3:-}" ]; then
  echo "== debootstrap bookworm (minbase) into $root"
  debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
    tail -n 20 "$root.log" >&2
    exit 1
  }
fi
mount -t proc proc "$root/proc"
# Nothing may start services inside the chroot.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
cp "$deb" "$root/tmp/"

in_chroot() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
echo "== apt-get install $(basename "$deb")"
in_chroot apt-get install -y -qq --no-install-recommends "/tmp/$(basename "$deb")" >/dev/null
echo "== fwengine --version"
in_chroot fwengine --version
echo "== fwengine plugins"
in_chroot fwengine plugins
echo "== fwengine check (shipped /etc/fwengine/fwengine.conf and rules.d)"
# Read through a pipe: the packaged engine ends with _Exit, so this also checks that it flushes its output.
checked=$(in_chroot fwengine check)
echo "$checked"
grep -q '^ok: ' <<<"$checked" || { echo "$0: fwengine check printed no 'ok:' line" >&2; exit 1; }
echo "== the service is installed but not enabled"
test -f "$root/lib/systemd/system/fwengine.service"
if [ -e "$root/etc/systemd/system/multi-user.target.wants/fwengine.service" ]; then
  echo "$0: installing the package enabled fwengine.service" >&2
  exit 1
fi
echo "== ok: chroot smoke test passed"
