#!/usr/bin/env bash
# Builds a stock Debian 12 guest from Debian's own packages, the way an admin's cloud image is made: Debian's
# cloud kernel and its initramfs-tools initramfs (virtio_net a module, loaded by udev), systemd with
# systemd-networkd asking for DHCP on every en*/eth* link, and busybox httpd on port 80. Nothing in it
# knows about chvm: it gets its address only if the host answers DHCP.
#
# Usage: build-stock-guest.sh OUTDIR
#
# Outputs, in OUTDIR:
#   disk.img     raw disk, MBR: partition 1 FAT16 /boot with SYSLINUX (bootable by SeaBIOS from the disk
#                alone), partition 2 ext4 root (root=/dev/vda2)
#   vmlinuz, initrd.img   Debian's kernel and initramfs from that /boot, for direct kernel boot
#   stock.env    shell variables: CHVM_STOCK_DISK, CHVM_STOCK_KERNEL, CHVM_STOCK_INITRD, CHVM_STOCK_CMDLINE,
#                CHVM_STOCK_BUILD_KEY
# The web server answers / with "chvm-stock-guest" and /cgi-bin/addr with `ip -4 -o addr` of the guest (a
# DHCP lease shows as "dynamic" with its lifetime).
#
# Needs root (mmdebstrap) and the packages mmdebstrap, e2fsprogs, dosfstools, mtools, fdisk, syslinux,
# syslinux-common (tools/install-deps.sh installs them). No loop device, no mount: the file systems are made
# from folders (mkfs.ext4 -d, mcopy) and put into the image at their offsets. Takes 2-4 minutes the first
# time (mmdebstrap downloads ~150 MB of packages); running it again does nothing while this script and the
# archive's versions of the kernel and systemd are unchanged. Exit status: 0 built or up to date, 2 a
# package could not be fetched, 1 anything else.
set -euo pipefail

prog=build-stock-guest.sh
die() {
        echo "$prog: $*" >&2
        exit 1
}

[ $# -eq 1 ] || die "usage: $prog OUTDIR"
[ "$(id -u)" -eq 0 ] || die "must run as root (mmdebstrap builds the root file system)"
for tool in mmdebstrap mkfs.ext4 mkfs.fat mcopy syslinux sfdisk apt-cache flock sha256sum; do
        command -v "$tool" >/dev/null 2>&1 ||
                die "$tool not found (packages: mmdebstrap e2fsprogs dosfstools mtools syslinux fdisk)"
done
mbr=/usr/lib/syslinux/mbr/mbr.bin
[ -f "$mbr" ] || die "$mbr not found (package syslinux-common)"

mkdir -p "$1"
outdir=$(cd "$1" && pwd)
self=$(readlink -f "${BASH_SOURCE[0]}")
exec 9>"$outdir/.lock"
flock 9

versions=$(apt-cache policy linux-image-cloud-amd64 systemd 2>/dev/null |
        awk '/^[^ ]/ { pkg = $1 } $1 == "Candidate:" { print pkg, $2 }') || true
if ! grep -q '^systemd: [0-9]' <<<"$versions"; then
        if [ -f "$outdir/stock.env" ]; then
                echo "$prog: cannot resolve the packages (no apt-get update yet?); using $outdir as it is"
                exit 0
        fi
        echo "$prog: apt-cache cannot resolve linux-image-cloud-amd64 and systemd: run 'apt-get update'" >&2
        exit 2
fi
build_key=$( (echo "$versions"; cat "$self") | sha256sum | cut -d' ' -f1)
if [ -f "$outdir/stock.env" ] && [ -f "$outdir/disk.img" ] &&
        grep -qx "CHVM_STOCK_BUILD_KEY=$build_key" "$outdir/stock.env"; then
        echo "$prog: $outdir is up to date"
        exit 0
fi
rm -f "$outdir/stock.env"

work=$(mktemp -d "$outdir/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root

# Only what a minimal cloud image has for this: no chvm-specific piece but the web page.
include=systemd,systemd-sysv,udev,iproute2,linux-image-cloud-amd64,initramfs-tools,busybox,netbase
echo "$prog: mmdebstrap bookworm (~150 MB of packages) ..."
started=$SECONDS
if ! mmdebstrap --quiet --variant=minbase --include="$include" bookworm "$root" 2>"$work/mmdebstrap.err"; then
        cat "$work/mmdebstrap.err" >&2
        grep -qiE 'failed to fetch|could not resolve|unable to fetch|temporary failure' "$work/mmdebstrap.err" &&
                exit 2
        die "mmdebstrap failed"
fi
# The admin's part: a host name, networkd asking for DHCP, the web server, the root file system.
echo stock >"$root/etc/hostname"
mkdir -p "$root/etc/systemd/network" "$root/srv/www/cgi-bin"
cat >"$root/etc/systemd/network/50-dhcp.network" <<'NET'
[Match]
Name=en* eth*

[Network]
DHCP=yes
NET
echo chvm-stock-guest >"$root/srv/www/index.html"
cat >"$root/srv/www/cgi-bin/addr" <<'CGI'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
exec ip -4 -o addr show scope global
CGI
chmod 755 "$root/srv/www/cgi-bin/addr"
cat >"$root/etc/systemd/system/web.service" <<'UNIT'
[Unit]
Description=The test page on port 80
After=network.target

[Service]
ExecStart=/bin/busybox httpd -f -p 80 -h /srv/www

[Install]
WantedBy=multi-user.target
UNIT
echo "/dev/vda2 / ext4 rw,errors=remount-ro 0 1" >"$root/etc/fstab"
systemctl --root="$root" enable systemd-networkd.service web.service >/dev/null 2>&1
chroot "$root" passwd -d root >/dev/null
echo "$prog: root file system in $((SECONDS - started)) s"

kernel=$(cd "$root/boot" && ls vmlinuz-* | sort -V | tail -n 1)
initrd=initrd.img-${kernel#vmlinuz-}
[ -f "$root/boot/$initrd" ] || die "no $initrd in the guest's /boot"
cmdline="root=/dev/vda2 rw console=ttyS0"

# Partition 1: FAT16 with the kernel, the initramfs and SYSLINUX (installed into the file by mtools).
boot_mib=96
mkfs.fat -C -n BOOT "$work/boot.img" $((boot_mib * 1024)) >/dev/null
printf 'DEFAULT debian\nPROMPT 0\nTIMEOUT 0\nSERIAL 0 115200\nLABEL debian\n  KERNEL /vmlinuz\n  INITRD /initrd.img\n  APPEND %s\n' \
        "$cmdline" >"$work/syslinux.cfg"
MTOOLS_SKIP_CHECK=1 mcopy -i "$work/boot.img" "$root/boot/$kernel" ::/vmlinuz
MTOOLS_SKIP_CHECK=1 mcopy -i "$work/boot.img" "$root/boot/$initrd" ::/initrd.img
MTOOLS_SKIP_CHECK=1 mcopy -i "$work/boot.img" "$work/syslinux.cfg" ::/syslinux.cfg
syslinux --install "$work/boot.img"
cp "$root/boot/$kernel" "$work/vmlinuz"
cp "$root/boot/$initrd" "$work/initrd.img"

# Partition 2: ext4 from the folder, with room to spare.
used_mib=$(du -sm "$root" | cut -f1)
root_mib=$((used_mib + 256))
mkfs.ext4 -q -F -L root -d "$root" "$work/root.img" "${root_mib}M"
rm -rf "$root"

start1=2048
start2=$((start1 + boot_mib * 2048))
total_mib=$((1 + boot_mib + root_mib + 1))
truncate -s "${total_mib}M" "$work/disk.img"
printf 'label: dos\nstart=%s, size=%s, type=6, bootable\nstart=%s, size=%s, type=83\n' \
        "$start1" $((boot_mib * 2048)) "$start2" $((root_mib * 2048)) | sfdisk -q "$work/disk.img"
dd if="$mbr" of="$work/disk.img" bs=440 count=1 conv=notrunc status=none
dd if="$work/boot.img" of="$work/disk.img" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$work/root.img" of="$work/disk.img" bs=1M seek=$((1 + boot_mib)) conv=notrunc,sparse status=none

mv "$work/disk.img" "$outdir/disk.img"
mv "$work/vmlinuz" "$outdir/vmlinuz"
mv "$work/initrd.img" "$outdir/initrd.img"
{
        printf 'CHVM_STOCK_DISK=%q\n' "$outdir/disk.img"
        printf 'CHVM_STOCK_KERNEL=%q\n' "$outdir/vmlinuz"
        printf 'CHVM_STOCK_INITRD=%q\n' "$outdir/initrd.img"
        printf 'CHVM_STOCK_CMDLINE=%q\n' "$cmdline"
        printf 'CHVM_STOCK_BUILD_KEY=%s\n' "$build_key"
} >"$outdir/stock.env"
echo "$prog: built $outdir/disk.img (${total_mib} MiB) in $((SECONDS - started)) s"
