#!/bin/bash
# deb.sh SOURCE_DIR
# The packaging acceptance test: builds the .deb files from SOURCE_DIR (lintian must report no errors),
# then installs fwengine into a throwaway Debian 12 chroot and runs the smoke test there. Needs root,
# the packaging tools and the Debian mirror the host's apt uses (FWE_DEB_MIRROR overrides it).
set -euo pipefail
source_dir=$(realpath "$1")
[ "$(id -u)" = 0 ] || { echo "not root: skipped"; exit 77; }
for tool in dpkg-buildpackage dh lintian debootstrap; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed: skipped"; exit 77; }
done
out=$(mktemp -d /tmp/fwengine-deb-test.XXXXXX)
root=$(mktemp -d /tmp/fwengine-chroot.XXXXXX)
bootstrap=
cleanup() {
  if [ -n "$bootstrap" ]; then
    kill -- "-$bootstrap" 2>/dev/null || true  # its process group: debootstrap and what it runs
    wait "$bootstrap" 2>/dev/null || true
  fi
  rm -rf "$out"
  rm -rf --one-file-system "$root" "$root.log"
}
trap cleanup EXIT

# The mirror apt already uses, so the chroot comes from the same place as the host's packages.
mirror=${FWE_DEB_MIRROR:-$(grep -hoE '^URIs: *http[^ ]*/debian$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 | sed 's/^URIs: *//')}
mirror=${mirror:-$(grep -hoE '^deb +http[^ ]*/debian ' /etc/apt/sources.list 2>/dev/null | head -n1 | awk '{print $2}')}
mirror=${mirror:-http://deb.debian.org/debian}

# niced: it shares the CPUs with the namespace tests, whose probes wait on real packets. Without debug
# information (no -g, no -dbgsym package): what is checked is the packaging, and that build costs a
# third less of the CPU the tests leave idle.
# The chroot's base system downloads while the package builds: one waits on the network, the other on
# the CPU.
echo "== debootstrap bookworm (minbase) into $root, beside the build"
setsid nice -n 10 debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 &
bootstrap=$!
DEB_BUILD_OPTIONS="parallel=$(nproc) noautodbgsym" DEB_CFLAGS_STRIP=-g DEB_CXXFLAGS_STRIP=-g \
  nice -n 10 "$source_dir/packaging/build-deb.sh" "$out" "$source_dir"
# The maintainer scripts: an upgrade restarts a running daemon once the new files are in place (no stop
# before it), removing the package stops it, and nothing starts or enables it on install.
scripts=$out/maintainer-scripts
dpkg-deb -e "$(ls "$out"/fwengine_*.deb)" "$scripts"
grep -q 'try-restart' "$scripts/postinst" || { echo "FAIL: postinst does not restart the daemon after an upgrade"; exit 1; }
! grep -qs 'deb-systemd-invoke stop' "$scripts/preinst" || { echo "FAIL: preinst stops the daemon before an upgrade"; exit 1; }
grep -q 'deb-systemd-invoke stop fwengine.service' "$scripts/prerm" || { echo "FAIL: prerm does not stop the daemon on removal"; exit 1; }
! grep -qE 'deb-systemd-invoke (start|restart) |systemctl( --system)? enable' "$scripts/postinst" ||
  { echo "FAIL: postinst starts or enables the daemon"; exit 1; }
echo "ok   maintainer scripts: restart after upgrade, stop on removal, no start on install"
status=0
wait "$bootstrap" || status=$?
bootstrap=
if [ "$status" != 0 ]; then
  echo "FAIL: debootstrap exited $status"
  tail -n 20 "$root.log"
  exit 1
fi
"$source_dir/packaging/chroot-smoke.sh" "$out" "$mirror" "$root"
