#!/bin/sh
# carpd up/down hook for a cloud VIP: on becoming MASTER, ask the provider's
# API to move the virtual address (a secondary private IP, an elastic IP or
# a route in the VPC's route table) to this node. carpd has already put the
# address on the interface; the provider's network must now deliver it here.
#
# carpd runs it as `<hook> <interface> <first address> [xparam]` with
# CARP_STATE (MASTER or BACKUP), CARP_VHID, CARP_INTERFACE and
# CARP_ADDRESSES (space-separated) in the environment, and kills it after
# hook_timeout. Use it as both `up` and `down` (see config/unicast.toml).
#
# Everything in <angle brackets> is a placeholder: replace the `move_address`
# body with your provider's CLI or API call.
set -eu

interface="$1"
address="$2"
state="${CARP_STATE:-}"

log() { logger -t carpd-cloud-hook "vhid ${CARP_VHID:-?} $*" 2>/dev/null || echo "$*" >&2; }

# This node's identity at the provider, e.g. from the instance metadata
# service: <instance-id>, <network-interface-id>.
node_id="<this-node-id>"

move_address() {
    # Examples of what goes here (pseudo-commands, not real endpoints):
    #   <provider-cli> assign-private-ip --interface "<network-interface-id>" \
    #       --address "$1" --allow-reassignment
    #   <provider-cli> replace-route --route-table "<route-table-id>" \
    #       --destination "$1/32" --target "<network-interface-id>"
    # It must be idempotent and must take over the address even while the
    # old master still holds it (the old master may be dead).
    log "would move $1 to $node_id"
}

case "$state" in
MASTER)
    # retry a few times: a failover usually happens when things are flaky
    for try in 1 2 3; do
        if move_address "$address"; then
            log "$address now routed to $node_id ($interface)"
            exit 0
        fi
        log "moving $address failed (try $try)"
        sleep 2
    done
    exit 1
    ;;
*)
    # Nothing to undo: the next master moves the address to itself. carpd
    # has removed the address from the interface already.
    log "$address released ($state)"
    ;;
esac
