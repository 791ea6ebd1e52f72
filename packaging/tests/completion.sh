#!/bin/bash
# completion.sh COMPLETION_SCRIPT FWENGINE_BINARY
# Runs the completion function as bash would, with the two bash-completion helpers it uses replaced
# by minimal ones (bash-completion itself need not be installed), and checks what it offers.
set -euo pipefail
script=$1 fwengine=$2
bash -n "$script"

# shellcheck disable=SC2034  # words, cword, cur and prev are read by _fwengine
_init_completion() {
  words=("${COMP_WORDS[@]}")
  cword=$COMP_CWORD
  cur=${COMP_WORDS[COMP_CWORD]}
  prev=${COMP_WORDS[COMP_CWORD - 1]}
}
_filedir() { COMPREPLY=("<files>"); }
_available_interfaces() { COMPREPLY=("<interfaces>"); }
# shellcheck source=/dev/null
source "$script"

failures=0
expect() {
  local want=$1
  shift
  COMP_WORDS=("$fwengine" "$@")
  COMP_CWORD=$#
  COMPREPLY=()
  _fwengine
  local got="${COMPREPLY[*]}"
  if [ "$got" != "$want" ]; then
    echo "fwengine $*<TAB>: expected '$want', got '$got'" >&2
    failures=$((failures + 1))
  fi
}
expect "apply check ir render diff trace status flush migrate confirm daemon plugins version help" ""
expect "diff daemon" d
expect "ebpf iptables nft" --backend ""
expect "yaml" --frontend y
expect "apply" --backend nft ap
expect "--config --confirm" apply --c
expect "--exit-code" diff --ex
expect "<files>" -f ""
expect "<interfaces>" trace --iif ""
expect "tcp udp icmp icmpv6" trace --proto ""
expect "" check ""
expect "--watch" daemon --w
expect "<files>" --etcd-ca ""
expect "--etcd-ca --etcd-cert --etcd-cache" --etcd-c
expect "etcd://" --frontend calico --source ""
[ "$failures" = 0 ] && echo "ok: completion"
