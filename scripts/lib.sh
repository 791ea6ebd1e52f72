# Shared by scripts/demo and scripts/test: install what is missing, build.
set -euo pipefail
FWE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
JOBS=$(nproc)

fwe_need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "$0: run as root (it installs packages and creates network namespaces): sudo $0" >&2
    exit 2
  fi
}

# fwe_apt_install PKG...: apt-get install that starts no service. firewalld (the differential tests'
# oracle) with its dependencies dbus and polkitd, and etcd (the fleet tests' datastore) are daemons: on
# a machine that runs systemd their maintainer scripts would start them, and firewalld would take over
# the firewall of the root network namespace. A /usr/sbin/policy-rc.d that exits 101 ("action
# forbidden") stops invoke-rc.d and deb-systemd-invoke from starting anything; it is removed afterwards
# only if we created it. The tests start their own firewalld and etcd (in throwaway namespaces, on
# loopback). Such a service installed here is also disabled, so that it does not start at the next boot.
fwe_apt_install() {
  local guard=/usr/sbin/policy-rc.d created=0 status=0 pkg unit
  local -A services=([firewalld]=firewalld.service [etcd-server]=etcd.service) had=()
  for pkg in "${!services[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" && had[$pkg]=1
  done
  if [ ! -e "$guard" ]; then
    printf '#!/bin/sh\n# fwengine scripts/lib.sh: no service starts while packages are installed\nexit 101\n' >"$guard"
    chmod 755 "$guard"
    created=1
  fi
  { apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; } || status=$?
  if [ "$created" = 1 ]; then rm -f "$guard"; fi
  for pkg in "${!services[@]}"; do
    unit=${services[$pkg]}
    if [ -z "${had[$pkg]:-}" ] && command -v systemctl >/dev/null &&
      dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      systemctl disable --quiet "$unit" 2>/dev/null || true
    fi
  done
  return "$status"
}

# Installs the packages of scripts/packages.txt that are not installed yet.
fwe_install_packages() {
  local missing=()
  while read -r pkg; do
    case "$pkg" in ''|'#'*) continue ;; esac
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done < "$FWE_ROOT/scripts/packages.txt"
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing: ${missing[*]}"
    fwe_apt_install "${missing[@]}"
  fi
}

# fwe_build DIR [cmake args...]
fwe_build() {
  local dir=$1; shift
  cmake -S "$FWE_ROOT" -B "$dir" "$@" >/dev/null
  cmake --build "$dir" -j "$JOBS"
}

# fwe_build_targets DIR "TARGET..." [cmake args...]: only what those targets need.
fwe_build_targets() {
  local dir=$1 targets=$2; shift 2
  cmake -S "$FWE_ROOT" -B "$dir" "$@" >/dev/null
  # shellcheck disable=SC2086 # a list of target names
  cmake --build "$dir" -j "$JOBS" --target $targets
}
