#!/bin/sh
# PID 1 of a User-Mode Linux node kernel (see uml.py). The root file system is the host's own, through
# hostfs, so nothing here may write to it: every mount below is the UML kernel's own and vanishes with it.
# The kernel command line passes bb_ip (the node's address), bb_port, bb_python and bb_agent to this script.
set -e
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=0755 tmpfs /run
# The host's /lib/modules holds the host kernel's modules; this kernel's come from the UML package.
release=$(uname -r)
mount -t tmpfs -o mode=0755 tmpfs /lib/modules
mkdir /lib/modules/"$release"
mount --bind /usr/lib/uml/modules/"$release" /lib/modules/"$release"
ip link set lo up
ip addr add "$bb_ip"/16 dev eth0
ip link set eth0 up
exec "$bb_python" -I -S -B "$bb_agent" --listen "$bb_ip":"$bb_port"
