#!/usr/bin/env bash
# Verifies kernel TLS for real: boots a Debian kernel (which has the `tls` module) under qemu,
# starts a `--features ktls` daemon in it and downloads files over HTTPS through kTLS, checking
# every byte, for each cipher on TLS 1.2 and 1.3, keep-alive (the kernel decrypts the later requests),
# an idle connection that parks (no task; the kernel keeps its keys) and serves again, and the
# daemon's close_notify; then the same over HTTP/2 (ALPN h2: the daemon's GOAWAY and close_notify
# after three streams, and a connection the client closes, whose close_notify the daemon must read
# as the end, not as an I/O error); then checks that `proxyctl status` counts the connections on kTLS,
# and measures the daemon's resident memory per idle (parked) kTLS connection.
#
# Not part of CI (it needs qemu and a kernel package, and takes a few minutes). Run as root on a
# Debian machine:   bash tests/ktls-vm/run.sh
# It prints PASS or FAIL as its last line and exits 0 only on PASS. Work files go to
# target/ktls-vm (KERNEL_PKG picks another kernel package).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
work=$root/target/ktls-vm
mkdir -p "$work"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need qemu-system-x86_64 || ! need cpio; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-x86 cpio
fi

echo "== building the daemon (--features ktls), proxyctl and the test client"
cargo build --release --locked --features ktls -p zerocopy-server --bin zerocopy-server \
  --example ktls-vm-fetch
cargo build --release --locked -p proxyctl

echo "== the kernel"
cd "$work"
pkg=${KERNEL_PKG:-$(apt-cache search --names-only '^linux-image-[0-9.]+-[0-9]+-amd64$' \
  | cut -d' ' -f1 | sort -V | tail -1)}
if [ ! -d "kernel-$pkg" ]; then
  rm -f ./*.deb
  apt-get download "$pkg" busybox-static 2>/dev/null
  dpkg -x "$(ls "$pkg"_*.deb)" "kernel-$pkg"
  rm -rf bb && dpkg -x "$(ls busybox-static_*.deb)" bb
fi
vmlinuz=$(ls "kernel-$pkg"/boot/vmlinuz-*)
modules=$(ls -d "kernel-$pkg"/lib/modules/*)
kver=$(basename "$modules")

echo "== the initramfs"
rm -rf initrd && mkdir -p initrd/{bin,sbin,dev,proc,sys,tmp,www,lib/modules}
cp bb/bin/busybox initrd/bin/busybox
# The tls module and the crypto it asks for (gcm, chacha20poly1305, …), loaded by modprobe.
mkdir -p "initrd/lib/modules/$kver/kernel"
for d in net/tls crypto arch/x86/crypto lib/crypto; do
  mkdir -p "initrd/lib/modules/$kver/kernel/$d"
  cp -r "$modules/kernel/$d/." "initrd/lib/modules/$kver/kernel/$d/"
done
cp "$modules"/modules.* "initrd/lib/modules/$kver/" # modules.dep is written by depmod at boot
# The binaries and the shared libraries they load, at their paths.
for bin in zerocopy-server proxyctl examples/ktls-vm-fetch; do
  strip -o "initrd/$(basename "$bin")" "$root/target/release/$bin"
  for lib in $(ldd "$root/target/release/$bin" | grep -o '/[^ ]*'); do
    mkdir -p "initrd$(dirname "$lib")"
    cp -L "$lib" "initrd$lib"
  done
done
./initrd/ktls-vm-fetch gen initrd
head -c 5242887 /dev/urandom > initrd/www/big.bin
echo "hello through the kernel" > initrd/www/index.html
cat > initrd/config.toml <<'EOF'
[server]
listen = "127.0.0.1:8443"
threads = 1

[admin]
socket = "/tmp/admin.sock"

[logging]
level = "debug"

[http2]
max_requests_per_connection = 3

[tls]
cert_path = "/site.pem"
key_path = "/site.key"
ktls_enabled = true
ktls_fallback_enabled = false

[path_routes."site.test"]
"/" = { path = "/www" }
EOF
cat > initrd/init <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
/bin/busybox --install -s /sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmp /tmp
mount -t devtmpfs dev /dev
echo /sbin/modprobe > /proc/sys/kernel/modprobe
depmod
ip link set lo up
result=FAIL
if modprobe tls; then
  echo "kernel $(uname -r): $(grep '^tls ' /proc/modules)"
  ./zerocopy-server --config /config.toml 2> /tmp/daemon.log &
  daemon=$!
  i=0
  while [ ! -S /tmp/admin.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  if KTLS_VM_PROXYCTL=/proxyctl /ktls-vm-fetch get 127.0.0.1:8443 /ca.pem /www /index.html /big.bin /index.html &&
    /ktls-vm-fetch h2 127.0.0.1:8443 /ca.pem /www /index.html /big.bin /index.html; then
    sleep 1
    status=$(/proxyctl --socket /tmp/admin.sock status --json | tr -d ' \n')
    echo "status: $status"
    # 6 HTTP/1.1 connections, 12 HTTP/2 ones; no HTTP/2 connection ended in an error.
    case "$status" in
      *'"ktls":18,"ktls_fallback":0,"ktls_refused":0'*)
        if grep "HTTP/2 connection ended" /tmp/daemon.log; then
          echo "an HTTP/2 connection on kTLS ended in an error"
        else
          result=PASS
        fi ;;
    esac
    # Memory per idle kTLS connection, all of them parked, on a fresh daemon that logs at
    # the default level (debug lines would be part of what is measured).
    if [ $result = PASS ]; then
      sed 's/^level = "debug"$/level = "info"/' /config.toml > /tmp/kernel.toml
      # The same with rustls in userspace, for comparison.
      sed 's/^ktls_enabled = true$/ktls_enabled = false/' /tmp/kernel.toml > /tmp/userspace.toml
      for mode in kernel userspace; do
        kill -TERM "$daemon"
        wait "$daemon"
        ./zerocopy-server --config /tmp/$mode.toml 2> /tmp/$mode.log &
        daemon=$!
        i=0
        while [ ! -S /tmp/admin.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        echo "$mode TLS:"
        if ! KTLS_VM_PROXYCTL=/proxyctl /ktls-vm-fetch idle 127.0.0.1:8443 /ca.pem 500 "$daemon"; then
          result=FAIL
        fi
      done
    fi
  fi
  echo "--- daemon log"
  tail -n 400 /tmp/daemon.log
  echo "---"
else
  echo "cannot load the tls module"
fi
echo "KTLS-VM RESULT: $result"
poweroff -f
EOF
chmod +x initrd/init
(cd initrd && find . | cpio -o -H newc --quiet | gzip -1 > ../initrd.gz)

echo "== booting $kver under qemu (software emulation)"
timeout 600 qemu-system-x86_64 -accel tcg -cpu max -m 1024 -nographic -no-reboot \
  -kernel "$vmlinuz" -initrd initrd.gz -append "console=ttyS0 panic=-1 quiet" \
  | tee console.log
if grep -q "KTLS-VM RESULT: PASS" console.log; then
  echo PASS
else
  echo FAIL
  exit 1
fi
