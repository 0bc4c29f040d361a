#!/usr/bin/env bash
# Test equipment for benches/net_setup.rs: the Node.js vmsan's way of building a VM network
# (as that tool did it): one `ip`, `sysctl` or `nft` process per step. It does the same
# steps as vmsan_net::setup/teardown/apply_policy, with the same nft rulesets, inside the
# benchmark's stand-in host namespace (host-side commands run through `nsenter --net`, as if
# run on the host itself; VM-namespace commands through `ip netns exec`, as that tool did).
#
# usage: reference-net.sh setup    HOSTNS VMNS SLOT TAP_IP GUEST_NET VETH_H_IP VETH_G_IP VM_RULES HOST_RULES
#        reference-net.sh teardown HOSTNS VMNS SLOT GUEST_NET HOST_REMOVE_RULES
#        reference-net.sh policy   VMNS POLICY_RULES
set -euo pipefail
cmd=$1; shift
case "$cmd" in
setup)
  H=$1 NS=$2 N=$3 TAP_IP=$4 GNET=$5 HIP=$6 GIP=$7 VMR=$8 HOSTR=$9
  HN=/run/netns/$H
  ip netns add "$NS"
  ip -n "$H" link add "veth-h-$N" type veth peer name "veth-g-$N"
  ip -n "$H" link set "veth-g-$N" netns "$NS"
  ip -n "$H" addr add "$HIP/30" dev "veth-h-$N"
  ip -n "$H" link set "veth-h-$N" up
  ip -n "$NS" addr add "$GIP/30" dev "veth-g-$N"
  ip -n "$NS" link set "veth-g-$N" up
  ip -n "$NS" link set lo up
  ip -n "$NS" route add default via "$HIP"
  ip netns exec "$NS" sysctl -qw net.ipv4.ip_forward=1
  ip netns exec "$NS" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
  ip -n "$H" route add "$GNET" via "$GIP"
  nsenter --net="$HN" sysctl -qw net.ipv4.ip_forward=1
  nsenter --net="$HN" sysctl -qw "net.ipv4.conf.veth-h-$N.route_localnet=1"
  ip -n "$NS" tuntap add dev tap0 mode tap user 4242 group 4343
  ip -n "$NS" addr add "$TAP_IP/30" dev tap0
  ip -n "$NS" link set tap0 up
  ip netns exec "$NS" nft -f "$VMR"
  nsenter --net="$HN" nft -f "$HOSTR"
  ;;
teardown)
  H=$1 NS=$2 N=$3 GNET=$4 HOSTR=$5
  HN=/run/netns/$H
  nsenter --net="$HN" nft -f "$HOSTR" || true
  ip -n "$H" route del "$GNET" 2>/dev/null || true
  ip -n "$H" link del "veth-h-$N" 2>/dev/null || true
  ip netns del "$NS"
  ;;
policy)
  NS=$1 RULES=$2
  ip netns exec "$NS" nft -f "$RULES"
  ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
