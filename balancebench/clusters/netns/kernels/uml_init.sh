#!/bin/sh
# PID 1 of a User-Mode Linux node kernel (see uml.py). The root file system is the host's own, through
# hostfs, so nothing here may write to it: every mount below is the UML kernel's own and vanishes with it.
# The kernel command line passes bb_ip (the node's address), bb_port, bb_python and bb_agent to this script.
set -e
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=0755 tmpfs /run
# This kernel's modules come from the UML package. The host's /lib/modules holds the host kernel's, or
# does not exist at all (a container image without a kernel), and nothing may be created on the host's
# file system: modprobe gets a root of its own on /run (-d), for us and for the kernel's own requests.
release=$(uname -r)
mkdir -p /run/modroot/lib/modules/"$release"
mount --bind /usr/lib/uml/modules/"$release" /run/modroot/lib/modules/"$release"
printf '#!/bin/sh\nexec /usr/sbin/modprobe -d /run/modroot "$@"\n' > /run/modprobe
chmod 755 /run/modprobe
echo /run/modprobe > /proc/sys/kernel/modprobe
ip link set lo up
ip addr add "$bb_ip"/16 dev eth0
ip link set eth0 up
exec "$bb_python" -I -S -B "$bb_agent" --listen "$bb_ip":"$bb_port"
