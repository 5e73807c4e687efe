#!/usr/bin/env bash
# Builds the small test guest the QEMU tests boot: a Debian cloud kernel and a busybox initramfs whose /init
# loads virtio_net, takes its address from `ip=ADDR::GW:MASK::eth0:off` on the kernel command line, prints
# "chvm-guest: ready ADDR" on the console and serves a page over HTTP on port 80.
#
# Usage: build-guest.sh OUTDIR
#
# Outputs OUTDIR/vmlinuz, OUTDIR/initrd.img and OUTDIR/guest.env (shell variables: paths, kernel version,
# package versions). The packages are fetched with `apt-get download` into OUTDIR/debs and only extracted,
# never installed. Running it again does nothing when guest.env records the same package versions and the
# same version of this script; when the package lists cannot be read (no `apt-get update` yet) an existing
# build is used as it is. Needs apt-get, apt-cache, dpkg-deb, cpio, gzip and modinfo (kmod); not root.
#
# Exit status: 0 built or up to date, 2 a package could not be downloaded or resolved, 1 anything else.
set -euo pipefail

prog=build-guest.sh
die() {
        echo "$prog: $*" >&2
        exit 1
}
die_fetch() {
        echo "$prog: $*" >&2
        exit 2
}

[ $# -eq 1 ] || die "usage: $prog OUTDIR"
for tool in apt-get apt-cache dpkg-deb cpio gzip modinfo flock sha256sum; do
        command -v "$tool" >/dev/null 2>&1 ||
                die "$tool not found (packages: apt, dpkg, cpio, gzip, kmod, util-linux)"
done

mkdir -p "$1"
outdir=$(cd "$1" && pwd)
self=$(readlink -f "${BASH_SOURCE[0]}")

# The modules virtio-net needs, in load order. Dependencies the kernel's own metadata names and this list
# misses are added before their users (see resolve_order), so a newer kernel with one more dependency still
# boots. button and evdev are optional: with them busybox acpid turns the ACPI power button (QEMU
# system_powerdown) into a poweroff.
net_modules=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover
        virtio_net)
optional_modules=(button evdev)

# One build at a time per OUTDIR (parallel `make check` jobs share it).
exec 9>"$outdir/.lock"
flock 9

# --- which packages ------------------------------------------------------------------------------------

# The versioned kernel package the metapackage depends on, e.g. linux-image-6.1.0-56-cloud-amd64.
kernel_pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }') || true
kernel_ver=""
busybox_ver=""
if [ -n "$kernel_pkg" ]; then
        # One apt-cache run for both (each takes most of a second): "PKG:" lines, then "  Candidate: VER".
        candidates=$(apt-cache policy "$kernel_pkg" busybox-static 2>/dev/null |
                awk '/^[^ ]/ { pkg = $1; sub(/:$/, "", pkg) } $1 == "Candidate:" { print pkg, $2 }') || true
        kernel_ver=$(awk -v p="$kernel_pkg" '$1 == p { print $2 }' <<<"$candidates")
        busybox_ver=$(awk '$1 == "busybox-static" { print $2 }' <<<"$candidates")
fi
if [ -z "$kernel_pkg" ] || [ -z "$kernel_ver" ] || [ "$kernel_ver" = "(none)" ] ||
        [ -z "$busybox_ver" ] || [ "$busybox_ver" = "(none)" ]; then
        if [ -f "$outdir/guest.env" ] && [ -f "$outdir/vmlinuz" ] && [ -f "$outdir/initrd.img" ]; then
                echo "$prog: cannot resolve the packages (no apt-get update yet?); using $outdir as it is"
                exit 0
        fi
        die_fetch "apt-cache cannot resolve linux-image-cloud-amd64 and busybox-static:" \
                "run 'apt-get update' first"
fi
kernel_release=${kernel_pkg#linux-image-}

# Everything the outputs depend on; guest.env records it and a rebuild happens only when it changes.
build_key=$( (printf '%s\n' "$kernel_pkg=$kernel_ver" "busybox-static=$busybox_ver"; cat "$self") |
        sha256sum | cut -d' ' -f1)
if [ -f "$outdir/guest.env" ] && [ -f "$outdir/vmlinuz" ] && [ -f "$outdir/initrd.img" ] &&
        grep -qx "CHVM_GUEST_BUILD_KEY=$build_key" "$outdir/guest.env"; then
        echo "$prog: $outdir is up to date ($kernel_pkg $kernel_ver, busybox-static $busybox_ver)"
        exit 0
fi

# --- download ------------------------------------------------------------------------------------------

debs=$outdir/debs
mkdir -p "$debs"

# Prints the path of PKG's .deb of VERSION in $debs, downloading it when it is not there yet.
fetch() {
        local pkg=$1 ver=$2 f
        for f in "$debs/${pkg}"_*.deb; do
                if [ -f "$f" ] && [ "$(dpkg-deb -f "$f" Version)" = "$ver" ]; then
                        echo "$f"
                        return 0
                fi
        done
        echo "$prog: downloading $pkg=$ver" >&2
        # As root apt drops to the _apt user for downloads, which may not be able to write $debs.
        local sandbox=()
        [ "$(id -u)" -ne 0 ] || sandbox=(-o APT::Sandbox::User=root)
        local log
        if ! log=$(cd "$debs" && apt-get download "${sandbox[@]}" "$pkg=$ver" 2>&1); then
                echo "$log" >&2
                die_fetch "apt-get download $pkg=$ver failed" \
                        "(network or mirror unreachable? stale package lists: run 'apt-get update')"
        fi
        for f in "$debs/${pkg}"_*.deb; do
                if [ -f "$f" ] && [ "$(dpkg-deb -f "$f" Version)" = "$ver" ]; then
                        echo "$f"
                        return 0
                fi
        done
        die_fetch "apt-get download $pkg=$ver left no .deb in $debs"
}

kernel_deb=$(fetch "$kernel_pkg" "$kernel_ver")
busybox_deb=$(fetch busybox-static "$busybox_ver")
# Older versions of the same packages are no longer needed.
for f in "$debs"/*.deb; do
        [ "$f" = "$kernel_deb" ] || [ "$f" = "$busybox_deb" ] || rm -f "$f"
done

# --- extract -------------------------------------------------------------------------------------------

work=$(mktemp -d "$outdir/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

dpkg-deb -x "$kernel_deb" "$work/kernel"
dpkg-deb -x "$busybox_deb" "$work/busybox"
vmlinuz=$work/kernel/boot/vmlinuz-$kernel_release
[ -f "$vmlinuz" ] || die "$kernel_deb has no boot/vmlinuz-$kernel_release"
busybox=$work/busybox/bin/busybox
[ -x "$busybox" ] || die "$busybox_deb has no bin/busybox"
# (The list is read whole: grep -q stopping early would kill busybox with SIGPIPE and fail the pipeline.)
applets=" $("$busybox" --list | tr '\n' ' ')"
for applet in sh mount insmod ip ifconfig route httpd acpid poweroff sleep; do
        [[ $applets == *" $applet "* ]] || die "busybox-static $busybox_ver lacks the $applet applet"
done

moddir=$work/kernel/lib/modules/$kernel_release
[ -d "$moddir" ] || die "$kernel_deb has no lib/modules/$kernel_release"

# The package has no modules.dep: modules are found by name (file names may use - for _) and decompressed
# here, because busybox insmod may not read .ko.xz/.ko.zst.
# Sets mod_file[NAME] to the decompressed copy, or to "" when the package has no such file.
declare -A mod_file=()
find_module() {
        local name=$1 f
        if [ -z "${mod_file[$name]+x}" ]; then
                f=$(find "$moddir/kernel" -type f \( -name "$name.ko*" -o -name "${name//_/-}.ko*" \) |
                        head -n1)
                mod_file[$name]=""
                if [ -n "$f" ]; then
                        mkdir -p "$work/modules"
                        case $f in
                        *.ko) cp "$f" "$work/modules/$name.ko" ;;
                        *.ko.xz) xz -dc "$f" >"$work/modules/$name.ko" ;;
                        *.ko.zst) zstd -qdc "$f" >"$work/modules/$name.ko" ;;
                        *.ko.gz) gzip -dc "$f" >"$work/modules/$name.ko" ;;
                        *) die "unknown module format: $f" ;;
                        esac
                        mod_file[$name]=$work/modules/$name.ko
                fi
        fi
}
builtin_module() {
        grep -q "/$1.ko\$\|/${1//_/-}.ko\$" "$moddir/modules.builtin" 2>/dev/null
}

# Depth-first over `modinfo -F depends`, so every module comes after what it depends on.
declare -A mod_state=()
order=()
resolve_order() {
        local name=$1 optional=$2 f dep
        [ -z "${mod_state[$name]+x}" ] || return 0
        mod_state[$name]=visiting
        find_module "$name"
        f=${mod_file[$name]}
        if [ -z "$f" ]; then
                if builtin_module "$name"; then
                        mod_state[$name]=builtin
                        return 0
                fi
                [ "$optional" = yes ] || die "$kernel_pkg has no module $name (neither a .ko nor built in)"
                echo "$prog: note: optional module $name not in $kernel_pkg" >&2
                mod_state[$name]=missing
                return 0
        fi
        local deps
        deps=$(modinfo -F depends "$f")
        for dep in ${deps//,/ }; do
                resolve_order "$dep" no
        done
        mod_state[$name]=loaded
        order+=("$name")
}
for m in "${net_modules[@]}"; do resolve_order "$m" no; done
for m in "${optional_modules[@]}"; do resolve_order "$m" yes; done

# --- initramfs -----------------------------------------------------------------------------------------

root=$work/root
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,run,www,etc/acpi/PWRF,lib/modules,var/log,var/run}
cp "$busybox" "$root/bin/busybox"
for m in "${order[@]}"; do
        cp "${mod_file[$m]}" "$root/lib/modules/$m.ko"
done
printf '%s\n' "${order[@]}" >"$root/etc/modules"
printf '%s\n' "$kernel_release" >"$root/etc/chvm-guest-kernel"

# busybox acpid runs /etc/acpi/PWRF/00000080 for the power button; PID 1 here is a shell, not an init
# that understands busybox poweroff's signal, so power off directly.
cat >"$root/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
echo "chvm-guest: power button, powering off" >/dev/console
poweroff -f
EOF
chmod 755 "$root/etc/acpi/PWRF/00000080"

cat >"$root/init" <<'EOF'
#!/bin/busybox sh
# chvm test guest init (written by tests/guest/build-guest.sh).
/bin/busybox --install -s /bin
export PATH=/bin:/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# The console, whether or not the kernel could open one before /init.
exec </dev/console >/dev/console 2>&1

say() { echo "chvm-guest: $*"; }
# A guest that cannot come up powers off, so QEMU exits and the test fails at once instead of timing out.
fatal() {
        say "error: $*"
        poweroff -f
}

for m in $(cat /etc/modules); do
        insmod "/lib/modules/$m.ko" || say "insmod $m failed"
done

# ip=CLIENT:SERVER:GW:NETMASK:HOSTNAME:DEVICE:AUTOCONF; the kernel has no IP autoconfiguration: do it here.
ipconf=""
for arg in $(cat /proc/cmdline); do
        case $arg in
        ip=*) ipconf=${arg#ip=} ;;
        esac
done
[ -n "$ipconf" ] || fatal "no ip= on the kernel command line"
IFS=: read -r addr server gw mask hostname dev autoconf <<IPEOF
$ipconf
IPEOF
dev=${dev:-eth0}
[ -n "$hostname" ] && hostname "$hostname"

# The interface shows up once virtio_net has probed the device.
i=0
while [ ! -e "/sys/class/net/$dev" ] && [ $i -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
done
[ -e "/sys/class/net/$dev" ] || fatal "no $dev after 10 s; interfaces: $(ls /sys/class/net)"

ip link set lo up
ifconfig "$dev" "$addr" netmask "${mask:-255.255.255.0}" up || fatal "cannot configure $dev as $addr"
if [ -n "$gw" ]; then
        route add default gw "$gw" || fatal "cannot add the default route via $gw"
fi

echo "chvm test guest $addr" >/www/index.html
httpd -p 80 -h /www || fatal "httpd did not start"
acpid -c /etc/acpi -l /var/log/acpid.log || say "acpid failed: no poweroff on the power button"

mac=$(cat "/sys/class/net/$dev/address")
say "ready $addr ($dev $mac, kernel $(uname -r))"

# PID 1 must not exit.
while :; do
        sleep 3600
done
EOF
chmod 755 "$root/init"

# Fixed mtimes, sorted names, root ownership, renumbered inodes and gzip -n: the same inputs give the same
# initrd.img.
find "$root" -exec touch -h -d @0 {} +
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --reproducible --quiet) |
        gzip -9n >"$work/initrd.img"

# --- outputs: the files first, guest.env last (its key is what makes a later run skip the build) ---------

rm -f "$outdir/guest.env"
cp "$vmlinuz" "$outdir/vmlinuz.tmp" && mv -f "$outdir/vmlinuz.tmp" "$outdir/vmlinuz"
mv -f "$work/initrd.img" "$outdir/initrd.img"
{
        echo "# Written by tests/guest/build-guest.sh; source it."
        printf '%s=%q\n' \
                CHVM_GUEST_KERNEL "$outdir/vmlinuz" \
                CHVM_GUEST_INITRD "$outdir/initrd.img" \
                CHVM_GUEST_KERNEL_RELEASE "$kernel_release" \
                CHVM_GUEST_KERNEL_PACKAGE "$kernel_pkg" \
                CHVM_GUEST_KERNEL_PACKAGE_VERSION "$kernel_ver" \
                CHVM_GUEST_BUSYBOX_VERSION "$busybox_ver" \
                CHVM_GUEST_MODULES "${order[*]}" \
                CHVM_GUEST_BUILD_KEY "$build_key"
} >"$outdir/guest.env.tmp"
mv -f "$outdir/guest.env.tmp" "$outdir/guest.env"
echo "$prog: built $outdir/vmlinuz ($kernel_release) and $outdir/initrd.img" \
        "($(du -k "$outdir/initrd.img" | cut -f1) KiB; modules: ${order[*]})"
