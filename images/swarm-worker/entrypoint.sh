#!/bin/sh
# Make the container able to run an engine, forward the registry to loopback, exec dockerd.
set -eu

# /sys and the cgroup v1 controllers come read-only to a non-privileged container; dockerd
# needs them writable (cgroups for its containers, sysfs for bridges and veths). CAP_SYS_ADMIN
# (from cap_add=ALL) lets us remount them; on cgroup v2 the single mount is handled the same way.
mount -o remount,rw /sys
grep ' /sys/fs/cgroup' /proc/self/mountinfo | awk '{print $5}' | while read -r point; do
  mount -o remount,bind,rw "$point"
done

# The registry runs on the sim's network, published on the host as 127.0.0.1:$REGISTRY_PORT.
# Forwarding the same port on this node's loopback makes `localhost:$REGISTRY_PORT/<image>` one
# reference that works on the manager and every worker, and Docker trusts 127.0.0.0/8 registries
# over plain HTTP without any daemon configuration.
if [ -n "${REGISTRY_HOST:-}" ] && [ -n "${REGISTRY_PORT:-}" ]; then
  socat "TCP-LISTEN:${REGISTRY_PORT},bind=127.0.0.1,fork,reuseaddr" \
        "TCP:${REGISTRY_HOST}:${REGISTRY_UPSTREAM_PORT:-5000}" &
fi

# Inner bridge networks (docker0, docker_gwbridge) come from 10.250.0.0/16: outside the pools the
# host engine gives its own bridges (172.17-31.0.0/16, then 192.168.0.0/16), where the sim network,
# the model host and the manager's address live, and far up the swarm's overlay pool (10.0.0.0/8,
# handed out from the bottom). Plain TCP on 2375 is for the sim's private bridge only (see the
# Dockerfile).
# The worker's own resolv.conf names the outer engine's embedded DNS (127.0.0.11), which is of no
# use to its containers: give them the host's resolvers (DNS_SERVERS, set by swarm-sim) instead.
dns_flags=""
for server in ${DNS_SERVERS:-}; do dns_flags="$dns_flags --dns $server"; done
rm -f /var/run/docker.pid
# shellcheck disable=SC2086
exec dockerd $dns_flags \
  --host unix:///var/run/docker.sock \
  --host tcp://0.0.0.0:2375 \
  --tls=false \
  --storage-driver overlay2 \
  --default-address-pool base=10.250.0.0/16,size=24 \
  "$@"
