#!/usr/bin/env bash
# Run the test suite on aarch64: an arm64 Debian bookworm chroot under qemu-user, on any x86-64 Debian host.
#
#   sudo tools/test_arm64.sh [--root DIR] [pytest arguments...]     e.g.  tools/test_arm64.sh -k kernels -x
#
# The chroot is built once (debootstrap --foreign, second stage through qemu) and cached in DIR
# (default $EDGELLM_ARM64_ROOT, else ~/.cache/edgellm/arm64-bookworm); so is its venv and pip cache.
# Each run copies this checkout (tracked and untracked, not ignored files) to DIR/work/main, bind-mounts
# ../shared read-only at DIR/work/shared (when present), installs ".[test]" into the venv and runs pytest.
# Needs root and a registered qemu-aarch64 binfmt handler. Where the script cannot register one (a container
# without binfmt_misc), do it on the host once:
#   apt-get install qemu-user-static binfmt-support
#   mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc    # if not mounted
#   update-binfmts --enable qemu-aarch64
# Under emulation everything runs ~10-30x slower than natively; numba compiles each kernel on first use.
set -euo pipefail

ROOT="${EDGELLM_ARM64_ROOT:-$HOME/.cache/edgellm/arm64-bookworm}"
if [[ "${1:-}" == "--root" ]]; then ROOT="$2"; shift 2; fi
MIRROR="${EDGELLM_ARM64_MIRROR:-http://deb.debian.org/debian}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
SHARED="$(dirname "$REPO")/shared"

say() { echo "test_arm64: $*" >&2; }
die() { say "error: $*"; exit 2; }

[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap, chroot, mounts)"

# 1. Host tools.
if ! command -v debootstrap >/dev/null || ! [[ -e /usr/bin/qemu-aarch64-static ]]; then
    say "installing debootstrap qemu-user-static binfmt-support"
    apt-get install -y debootstrap qemu-user-static binfmt-support >/dev/null
fi

# 2. binfmt: the kernel must hand arm64 ELF files to qemu.
if ! [[ -e /proc/sys/fs/binfmt_misc/register ]]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
fi
if ! [[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
    update-binfmts --enable qemu-aarch64 2>/dev/null || true
fi
[[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]] ||
    die "no qemu-aarch64 binfmt handler and none could be registered here; see the manual step at the top of $0"

# 3. The chroot, built once.
if ! [[ -e "$ROOT/.edgellm-ready" ]]; then
    mkdir -p "$ROOT"
    if ! [[ -e "$ROOT/debootstrap/debootstrap" || -e "$ROOT/.edgellm-stage2" ]]; then
        say "debootstrap first stage into $ROOT"
        debootstrap --arch=arm64 --foreign --variant=minbase bookworm "$ROOT" "$MIRROR"
    fi
    cp /usr/bin/qemu-aarch64-static "$ROOT/usr/bin/"    # for hosts whose handler lacks the F flag
    if ! [[ -e "$ROOT/.edgellm-stage2" ]]; then
        say "debootstrap second stage (through qemu)"
        chroot "$ROOT" /debootstrap/debootstrap --second-stage
        touch "$ROOT/.edgellm-stage2"
    fi
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
    say "installing python3-venv in the chroot"
    chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
        sh -c 'apt-get update -q && apt-get install -y -q --no-install-recommends python3-venv python3-dev ca-certificates'
    touch "$ROOT/.edgellm-ready"
fi
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# Local CAs of the host (a TLS-inspecting proxy's, say) are trusted in the chroot too, so pip can reach PyPI.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
    chroot "$ROOT" /usr/sbin/update-ca-certificates >/dev/null
fi

# 4. Mounts, undone on exit.
MOUNTS=()
cleanup() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTS[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
bind() {    # bind SRC DST [ro]
    mkdir -p "$2"
    mountpoint -q "$2" && return 0
    mount --bind "$1" "$2"
    MOUNTS+=("$2")
    if [[ "${3:-}" == ro ]]; then mount -o remount,bind,ro "$2"; fi
}
mountpoint -q "$ROOT/proc" || { mount -t proc proc "$ROOT/proc"; MOUNTS+=("$ROOT/proc"); }
bind /dev "$ROOT/dev"
bind /dev/pts "$ROOT/dev/pts"
mountpoint -q "$ROOT/dev/shm" || { mount -t tmpfs tmpfs "$ROOT/dev/shm"; MOUNTS+=("$ROOT/dev/shm"); }
mountpoint -q "$ROOT/tmp" || { mount -t tmpfs -o size=4g tmpfs "$ROOT/tmp"; MOUNTS+=("$ROOT/tmp"); }
if [[ -d "$SHARED" ]]; then bind "$SHARED" "$ROOT/work/shared" ro; fi

# 5. This checkout, copied fresh (the tests find ../shared next to it).
say "copying $REPO to $ROOT/work/main"
rm -rf "$ROOT/work/main"
mkdir -p "$ROOT/work/main"
(cd "$REPO" && git ls-files -z -co --exclude-standard | tar --null -T - --ignore-failed-read -cf - 2>/dev/null) |
    tar -xf - -C "$ROOT/work/main"

# 6. venv + install + pytest, inside the chroot.
say "pip install .[test] and pytest $* (aarch64 under qemu)"
ARGS=""
for a in "$@"; do ARGS+=" $(printf '%q' "$a")"; done
chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    NUMBA_CACHE_DIR=/root/.cache/numba PIP_CERT=/etc/ssl/certs/ca-certificates.crt /bin/bash -c "
set -euo pipefail
echo \"test_arm64: machine \$(uname -m), \$(python3 --version)\" >&2
[ -x /opt/venv/bin/python ] || python3 -m venv /opt/venv
. /opt/venv/bin/activate
cd /work/main
python -m pip install -q --upgrade pip
python -m pip install -q '.[test]'
python -m pytest$ARGS
"
