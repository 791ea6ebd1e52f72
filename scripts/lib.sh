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

# Installs the packages of scripts/packages.txt that are not installed yet.
fwe_install_packages() {
  local missing=()
  while read -r pkg; do
    case "$pkg" in ''|'#'*) continue ;; esac
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done < "$FWE_ROOT/scripts/packages.txt"
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# fwe_build DIR [cmake args...]
fwe_build() {
  local dir=$1; shift
  cmake -S "$FWE_ROOT" -B "$dir" "$@" >/dev/null
  cmake --build "$dir" -j "$JOBS"
}
