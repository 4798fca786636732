#!/bin/sh
# An emulated Debian bookworm arm64 Python 3.11 for the aarch64 check (tests/test_aarch64.py):
# Debian's own arm64 packages unpacked into a sysroot (a real multiarch install would
# conflict with the host's Python), run through qemu-user-static. Usage: sysroot.sh DIR
set -eu
dir=$1
command -v qemu-aarch64-static >/dev/null || \
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static >/dev/null
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
  apt-get update -q >/dev/null
fi
debs=$(mktemp -d)
(cd "$debs" && apt-get download -q \
  python3.11-minimal:arm64 libpython3.11-minimal:arm64 libpython3.11-stdlib:arm64 \
  libc6:arm64 libexpat1:arm64 zlib1g:arm64 libffi8:arm64 libssl3:arm64 libbz2-1.0:arm64 \
  liblzma5:arm64 libstdc++6:arm64 libgcc-s1:arm64 libsqlite3-0:arm64 libuuid1:arm64 \
  libncursesw6:arm64 libtinfo6:arm64 libcrypt1:arm64 media-types >/dev/null 2>&1) || {
  apt-get update -q >/dev/null
  (cd "$debs" && apt-get download -q \
    python3.11-minimal:arm64 libpython3.11-minimal:arm64 libpython3.11-stdlib:arm64 \
    libc6:arm64 libexpat1:arm64 zlib1g:arm64 libffi8:arm64 libssl3:arm64 libbz2-1.0:arm64 \
    liblzma5:arm64 libstdc++6:arm64 libgcc-s1:arm64 libsqlite3-0:arm64 libuuid1:arm64 \
    libncursesw6:arm64 libtinfo6:arm64 libcrypt1:arm64 media-types >/dev/null)
}
mkdir -p "$dir/sysroot"
for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$dir/sysroot"; done
rm -rf "$debs"
