#!/usr/bin/env bash
# ramdisk.sh DIR [SIZE]: mounts an ext4 file system at DIR on a loop device backed by a file in
# /dev/shm (memory). O_DIRECT works there (it does not on tmpfs itself), and the "device" is
# as fast as the CPU: what bench measures there is the software's cost per operation, without
# the noise of a real disk. Needs root. `ramdisk.sh --remove DIR` undoes it.
#
#   sudo scripts/ramdisk.sh /mnt/fast 3G
#   cd /mnt/fast && directfile bench --compare --qd 32 --runtime 3s
set -euo pipefail
if [ "${1:-}" = "--remove" ]; then
  dir=${2:?usage: ramdisk.sh --remove DIR}
  dev=$(findmnt -no SOURCE "$dir")
  umount "$dir"
  backing=$(losetup -nO BACK-FILE "$dev")
  losetup -d "$dev"
  rm -f "$backing"
  exit 0
fi
dir=${1:?usage: ramdisk.sh DIR [SIZE]} size=${2:-3G}
img=/dev/shm/directfile-ramdisk-$(echo "$dir" | tr / _).img
truncate -s "$size" "$img"
dev=$(losetup --show -f "$img")
mkfs.ext4 -q "$dev"
mkdir -p "$dir"
mount "$dev" "$dir"
echo "ext4 on $dev (backed by $img, $size) mounted at $dir"
