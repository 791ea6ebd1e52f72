#!/bin/bash
# build-deb.sh [OUT_DIR [SOURCE_DIR]]
# Builds the fwengine and fwengine-dev binary packages from a copy of SOURCE_DIR (default: this
# repository) with packaging/debian as debian/, runs lintian on them and copies the .deb files to
# OUT_DIR (default: ./deb-out). Exit 1 when the build fails or lintian reports errors.
# Needs: dpkg-dev, debhelper, lintian and the Build-Depends of packaging/debian/control.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out_dir=$(realpath -m "${1:-deb-out}")
source_dir=$(realpath "${2:-$here/..}")

for tool in dpkg-buildpackage dh lintian; do
  command -v "$tool" >/dev/null || { echo "$0: $tool is missing: apt-get install dpkg-dev debhelper lintian" >&2; exit 1; }
done
if ! grep -Eq '^\s*add_subdirectory\(packaging\)' "$source_dir/CMakeLists.txt"; then
  echo "$0: $source_dir/CMakeLists.txt does not add_subdirectory(packaging): the unit, config and man pages would be missing" >&2
  exit 1
fi

work=$(mktemp -d /tmp/fwengine-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
tree="$work/fwengine-$(dpkg-parsechangelog -l "$source_dir/packaging/debian/changelog" -S Version)"
mkdir -p "$tree"
# Only the sources: no build trees, no git metadata.
tar -C "$source_dir" --exclude=.git --exclude='./build*' --exclude='./deb-out' -cf - . | tar -C "$tree" -xf -
ln -s packaging/debian "$tree/debian"

export DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:-parallel=$(nproc)}"
(cd "$tree" && dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1 || {
  tail -n 60 "$work/build.log" >&2
  echo "$0: dpkg-buildpackage failed (last lines above)" >&2
  exit 1
}

mkdir -p "$out_dir"
cp "$work"/*.deb "$work"/*.changes "$work"/*.buildinfo "$work/build.log" "$out_dir"/
built=("$work"/fwengine_*.changes)
changes="$out_dir/$(basename "${built[0]}")"
echo "== built:" "$out_dir"/*.deb
echo "== lintian $changes"
# lintian exits 1 when it reports an error (and 2 when it could not check): both fail the build.
set +e
lintian --tag-display-limit 0 "$changes" 2>&1 | tee "$out_dir/lintian.txt"
lintian_status=${PIPESTATUS[0]}
set -e
if [ "$lintian_status" != 0 ]; then
  echo "$0: lintian failed with status $lintian_status (report above, also in $out_dir/lintian.txt)" >&2
  exit 1
fi
echo "== ok: no lintian errors"
