#!/bin/sh
# The fixture's stand-in for Talos' machined: run by /init (busybox sh from the mounted rootfs.sqsh,
# cwd = the initramfs root) it consumes the initramfs the way Talos does (extensions.yaml layers as an
# overlay, firmware, microcode, the META partition) and prints what it found as ONE line,
#   IMAGE-FACTORY-BOOT-REPORT <compact JSON>
# on /dev/console and on every serial port, so a test sees it whatever console= says. Then it powers
# off. Nothing here may hang or abort early: problems are collected into "errors".

R=${ROOT:-/layers/root}
T=${IMAGE_FACTORY_TMP:-/tmp}  # scratch files
KVER=$(uname -r)
ERRORS=""
TAB=$(printf '\t')
case " $(cat /proc/cmdline) " in *" image-factory.debug "*) DEBUG=1 ;; *) DEBUG="" ;; esac

# Progress with timestamps on the console when booted with image-factory.debug.
trace() {
    [ -n "$DEBUG" ] && echo "IMAGE-FACTORY-TRACE $(cut -d' ' -f1 /proc/uptime) $*" > /dev/console
}

# ---------------------------------------------------------------------------------------------- JSON

# JSON string of $1 (byte-wise; UTF-8 passes through unchanged).
json() {
    printf '%s' "$1" | od -A n -t u1 -v | json_bytes
}

# stdin: decimal bytes (od -t u1) -> one JSON string literal.
json_bytes() {
    awk '
    BEGIN { ORS = "" }
    {
        for (i = 1; i <= NF; i++) {
            b = $i + 0
            if (b == 34) out = out "\\\""
            else if (b == 92) out = out "\\\\"
            else if (b == 10) out = out "\\n"
            else if (b == 13) out = out "\\r"
            else if (b == 9) out = out "\\t"
            else if (b < 32 || b == 127) out = out sprintf("\\u%04x", b)
            else out = out sprintf("%c", b)
        }
    }
    END { print "\"" out "\"" }'
}

# stdin: "sha256  path" lines (sha256sum) -> JSON object {"path": "sha256"}; $1 = prefix to strip.
json_hashes() {
    awk -v strip="$1" '
    function esc(s,   o, i, c) {
        o = ""
        for (i = 1; i <= length(s); i++) {
            c = substr(s, i, 1)
            if (c == "\"") o = o "\\\""
            else if (c == "\\") o = o "\\\\"
            else if (c in ctl) o = o ctl[c]
            else o = o c
        }
        return "\"" o "\""
    }
    BEGIN { ORS = ""; for (i = 1; i < 32; i++) ctl[sprintf("%c", i)] = sprintf("\\u%04x", i); n = 0 }
    {
        h = substr($0, 1, 64); p = substr($0, 67)
        if (substr(p, 1, length(strip)) == strip) p = substr(p, length(strip) + 1)
        print (n++ ? "," : "{") esc(p) ":\"" h "\""
    }
    END { print (n ? "}" : "{}") }'
}

error() {
    ERRORS="$ERRORS${ERRORS:+,}$(json "$*")"
}

# ------------------------------------------------------------------------------------------- modules

modprobe_in() {  # $1 = root, $2 = module, then module parameters
    root=$1
    shift
    chroot "$root" /bin/busybox modprobe "$@" >/dev/null 2>&1
}

load_boot_modules() {
    # scsi_mod must scan synchronously so disks exist once the controller modules are loaded.
    modprobe_in "$R" scsi_mod scan=sync
    mods=""
    while read -r m; do
        # efivarfs refuses to load without EFI runtime services (BIOS boots).
        [ "$m" = efivarfs ] && [ ! -d /sys/firmware/efi ] && continue
        mods="$mods $m"
    done < "$R/etc/image-factory/boot-modules"
    # One modprobe for all: every exec costs under TCG.
    modprobe_in "$R" -a $mods
    for m in $mods; do
        [ -d "/sys/module/$m" ] || error "module $m did not load"
    done
}

wait_for_disks() {
    # Module init waits for async probes (libata, sd, nvme), so this is a short safety net: at least
    # 0.2 s, at most 3 s while an NVMe controller has no namespace yet.
    i=0
    while [ $i -lt 30 ]; do
        pending=0
        for c in /sys/class/nvme/nvme*; do
            [ -e "$c" ] || continue
            n=${c##*/}
            ls -d /sys/block/"$n"n* >/dev/null 2>&1 || pending=1
        done
        [ $pending = 0 ] && [ $i -ge 2 ] && return
        sleep 0.1
        i=$((i + 1))
    done
}

# ------------------------------------------------------------------------------------------ extensions

# extensions.yaml (any indentation, go-yaml style) -> "image<TAB>name<TAB>version" per layer.
parse_layers() {
    awk '
    function ind(s) { match(s, /^ */); return RLENGTH }
    function val(s,   v) {
        v = s; sub(/^[^:]*:[ \t]*/, "", v); sub(/[ \t\r]+$/, "", v)
        if (v ~ /^".*"$/) { v = substr(v, 2, length(v) - 2); gsub(/\\"/, "\"", v); gsub(/\\\\/, "\\", v) }
        else if (v ~ /^\047.*\047$/) { v = substr(v, 2, length(v) - 2); gsub(/\047\047/, "\047", v) }
        return v
    }
    function emit() { if (n) print img "\t" nm "\t" ver }
    BEGIN { inlayers = 0; seq = -1; n = 0 }
    /^[ \t]*(#.*)?\r?$/ { next }
    {
        line = $0; i = ind(line)
        if (i == 0 && line ~ /^layers:/) { inlayers = 1; next }
        if (i == 0 && line !~ /^-/) { inlayers = 0 }
        if (!inlayers) next
        if (line ~ /^ *- / && (seq < 0 || i == seq)) {
            if (seq < 0) seq = i
            emit(); n++; img = ""; nm = ""; ver = ""; md = -1; child = -1
            match(line, /^ *- +/); item = RLENGTH
            line = sprintf("%" item "s", "") substr(line, RLENGTH + 1); i = item
        }
        if (!n) next
        key = line; sub(/^ */, "", key); sub(/:.*/, "", key)
        if (i <= item) {
            md = -1
            if (i == item && key == "image") img = val(line)
            if (i == item && key == "metadata") md = i
            next
        }
        if (md >= 0 && i > md) {
            if (child < 0) child = i
            if (i == child && key == "name") nm = val(line)
            if (i == child && key == "version") ver = val(line)
        }
    }
    END { emit() }' "$1"
}

LAYERS_JSON=""
MODULES_JSON=""

mount_extensions() {
    [ -f /extensions.yaml ] || return
    parse_layers /extensions.yaml > $T/layers.tsv
    count=0
    lower="/layers/root"
    while IFS="$TAB" read -r img name version; do
        dir=/layers/layer$count
        mkdir -p "$dir"
        if ! mount -t squashfs -o ro,loop "/$img" "$dir" 2>$T/mount.err; then
            error "mount layer $count ($img): $(cat $T/mount.err)"
        fi
        files=$(cd "$dir" && find . -type f | LC_ALL=C sort | head -n 64 | while read -r f; do
            sha256sum "$f"; done | json_hashes "./")
        LAYERS_JSON="$LAYERS_JSON${LAYERS_JSON:+,}{\"image\":$(json "$img"),\"name\":$(json "$name"),\"version\":$(json "$version"),\"files\":$files}"
        lower="$dir:$lower"
        count=$((count + 1))
    done < $T/layers.tsv
    [ $count -gt 0 ] || return

    mkdir -p /newroot
    if ! mount -t overlay overlay -o "lowerdir=$lower" /newroot 2>$T/mount.err; then
        error "overlay mount ($lower): $(cat $T/mount.err)"
        return
    fi
    [ -d /newroot/proc ] && mount -t proc proc /newroot/proc 2>/dev/null
    [ -d /newroot/sys ] && mount -t sysfs sysfs /newroot/sys 2>/dev/null

    i=0
    while [ $i -lt $count ]; do
        find /layers/layer$i -type f -name '*.ko'
        i=$((i + 1))
    done | LC_ALL=C sort > $T/ko.list
    while read -r ko; do
        m=${ko##*/}
        m=${m%.ko}
        modprobe_in /newroot "$m"
        loaded=false
        [ -d "/sys/module/$(echo "$m" | tr - _)" ] && loaded=true
        MODULES_JSON="$MODULES_JSON${MODULES_JSON:+,}{\"name\":$(json "$m"),\"loaded\":$loaded}"
    done < $T/ko.list
}

# ------------------------------------------------------------------------------------------------ META

u32be() {  # $1 = file, $2 = offset
    od -A n -t u1 -v -j "$2" -N 4 "$1" | awk '{ print (($1 * 256 + $2) * 256 + $3) * 256 + $4 }'
}

# Prints "first_byte_offset" of the partition named META on block device $1, if any.
find_meta() {
    for ss in $(cat /sys/block/"${1##*/}"/queue/logical_block_size 2>/dev/null) 512 4096; do
        sig=$(od -A n -c -j "$ss" -N 8 "$1" 2>/dev/null | tr -d ' \n')
        [ "$sig" = "EFIPART" ] || continue
        od -A n -t u1 -v -j "$ss" -N 92 "$1" > $T/gpt.hdr
        set -- "$1" $(awk '
            { for (i = 1; i <= NF; i++) b[n++] = $i }
            function le(o, w,   v, k) { v = 0; for (k = w - 1; k >= 0; k--) v = v * 256 + b[o + k]; return v }
            END { print le(72, 8), le(80, 4), le(84, 4) }' $T/gpt.hdr)
        entries=$2 count=$3 esize=$4
        [ "$count" -gt 0 ] && [ "$esize" -ge 128 ] || continue
        [ "$count" -le 1024 ] || count=1024
        dd if="$1" of=$T/gpt.ent bs="$ss" skip="$entries" count=$(((count * esize + ss - 1) / ss)) 2>/dev/null
        od -A n -t u1 -v $T/gpt.ent | awk -v es="$esize" -v cnt="$count" -v ss="$ss" '
            { for (i = 1; i <= NF; i++) b[n++] = $i }
            function le(o, w,   v, k) { v = 0; for (k = w - 1; k >= 0; k--) v = v * 256 + b[o + k]; return v }
            END {
                for (e = 0; e < cnt; e++) {
                    o = e * es; used = 0
                    for (k = 0; k < 16; k++) if (b[o + k]) used = 1
                    if (!used) continue
                    name = ""
                    for (k = 0; k < 72; k += 2) {
                        c = b[o + 56 + k] + 256 * b[o + 57 + k]
                        if (c == 0) break
                        name = name (c < 128 ? sprintf("%c", c) : "?")
                    }
                    if (name == "META") { printf "%.0f\n", le(o + 32, 8) * ss; exit }
                }
            }'
        return
    done
}

META_JSON=""

# Parses one 256 KiB Talos ADV copy at offset $2 of file $1; returns 1 if it is not valid.
parse_adv() {
    f=$1 base=$2 len=262144
    [ "$(u32be "$f" "$base")" = 1514880045 ] || return 1              # 0x5A4B3C2D
    [ "$(u32be "$f" $((base + len - 4)))" = 2780087250 ] || return 1  # 0xA5B4C3D2
    want=$(od -A n -t x1 -v -j $((base + len - 36)) -N 32 "$f" | tr -d ' \n')
    got=$({ tail -c +$((base + 1)) "$f" | head -c $((len - 36))
            head -c 32 /dev/zero
            tail -c +$((base + len - 4 + 1)) "$f" | head -c 4; } | sha256sum)
    [ "${got%% *}" = "$want" ] || return 1
    off=4 acc=""
    while [ $off -le $((len - 36 - 8)) ]; do
        tag=$(u32be "$f" $((base + off)))
        [ "$tag" = 0 ] && break
        size=$(u32be "$f" $((base + off + 4)))
        [ $((off + 8 + size)) -le $((len - 36)) ] || return 1
        value=$(tail -c +$((base + off + 8 + 1)) "$f" | head -c "$size" | od -A n -t u1 -v | json_bytes)
        acc="$acc${acc:+,}\"$tag\":$value"
        off=$((off + 8 + size))
    done
    META_JSON=$acc
    return 0
}

read_meta() {
    for dev in /sys/block/*; do
        name=${dev##*/}
        case $name in loop* | ram* | zram* | dm-* | md* | sr*) continue ;; esac
        [ -b "/dev/$name" ] || continue
        start=$(find_meta "/dev/$name")
        [ -n "$start" ] || continue
        dd if="/dev/$name" of=$T/meta.bin bs=512 skip=$((start / 512)) count=1024 2>/dev/null
        # A never-written META (all zeros: fresh images without values) is simply empty, as in Talos.
        parse_adv $T/meta.bin 0 || parse_adv $T/meta.bin 262144 ||
            { [ "$(u32be $T/meta.bin 0)$(u32be $T/meta.bin 262144)" = 00 ] || error "META on $name: no valid copy"; }
        return
    done
}

# ---------------------------------------------------------------------------------------- Secure Boot

# True if the efivarfs SecureBoot variable $1 is 1. An efivarfs file is 4 attribute bytes, then the
# value; it cannot be seeked (lseek fails with ESPIPE), and `od -j 4` seeks on a regular file and then
# prints nothing, so the whole file is read and its fifth byte taken.
secure_boot_enabled() {
    [ -f "$1" ] && [ "$(od -A n -t u1 -v "$1" | awk '{ for (i = 1; i <= NF; i++) if (++n == 5) print $i }')" = 1 ]
}

# ------------------------------------------------------------------------------------------------ main

# Unit tests source this file with IMAGE_FACTORY_REPORT_LIB=1 to call the functions on the host.
[ -n "${IMAGE_FACTORY_REPORT_LIB:-}" ] && return 0

mkdir -p "$T" /layers
# A well-formed chroot for modprobe (it reads /proc/modules); mount points on a read-only fs are fine.
mount -t proc proc "$R/proc" 2>/dev/null
mount -t sysfs sysfs "$R/sys" 2>/dev/null
dmesg -n 1 2>/dev/null  # keep kernel messages from splitting our line on a shared serial port
trace start
load_boot_modules
trace modules loaded
wait_for_disks
trace disks ready
mount_extensions
trace extensions done
read_meta
trace meta done

boot=bios
secureboot=null
if [ -d /sys/firmware/efi ]; then
    boot=uefi
    secureboot=false
    grep -q ' /sys/firmware/efi/efivars ' /proc/mounts ||
        mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>/dev/null || error "mount efivarfs failed"
    sb=/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c
    if secure_boot_enabled "$sb"; then secureboot=true; fi
fi

firmware=$(for d in /usr/lib/firmware /lib/firmware; do
    [ -d "$d" ] && find "$d" -type f; done | LC_ALL=C sort | head -n 256 | while read -r f; do
    sha256sum "$f"; done | json_hashes "/")
microcode=""
if [ -d /kernel/x86/microcode ]; then
    for f in $(find /kernel/x86/microcode -type f | LC_ALL=C sort); do
        microcode="$microcode${microcode:+,}$(json "${f#/}")"
    done
fi
version=$(awk -F= '$1 == "VERSION_ID" { v = $2; gsub(/^"|"$/, "", v); print v }' "$R/etc/os-release")

{
    printf 'IMAGE-FACTORY-BOOT-REPORT {"version":%s,"kernel":%s,"boot":"%s","secureboot":%s' \
        "$(json "$version")" "$(json "$KVER")" "$boot" "$secureboot"
    printf ',"cmdline":%s' "$(json "$(cat /proc/cmdline)")"
    printf ',"extensions":[%s],"modules":[%s]' "$LAYERS_JSON" "$MODULES_JSON"
    printf ',"firmware":%s,"microcode":[%s],"meta":{%s},"errors":[%s]}\n' \
        "$firmware" "$microcode" "$META_JSON" "$ERRORS"
} > $T/report.line

# /dev/console first; then every serial port that is not already a console (no duplicate lines),
# each write bounded so a port that cannot drain does not hold up the power-off.
active=" $(cat /sys/class/tty/console/active 2>/dev/null) "
cat $T/report.line > /dev/console 2>/dev/null
for t in ttyS0 ttyS1 ttyS2 ttyS3 ttyAMA0 hvc0; do
    [ -c "/dev/$t" ] || continue
    case $active in *" $t "*) continue ;; esac
    timeout 3 sh -c 'cat "$2" > "$1"' _ "/dev/$t" "$T/report.line" 2>/dev/null
done
sync
poweroff -f
