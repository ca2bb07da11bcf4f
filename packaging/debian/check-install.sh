#!/usr/bin/env bash
# Installs the .deb on a clean Debian (a debootstrap'd minimal bookworm, in a chroot) with apt,
# as a user would, and checks what it installed: binaries, the system user, the unit enabled
# (not started), the conffile, man pages, completions; then runs the daemon on the default
# config and fetches its page and probes; then purges.
#
#   packaging/debian/check-install.sh target/debian/zerocopy-server_*.deb [ROOT]
#
# Needs root and debootstrap (apt-get install debootstrap); ROOT (default
# /var/tmp/zcs-bookworm) is made once and reused clean (a copy per run).
set -euo pipefail

deb=$(realpath "$1")
base=${2:-/var/tmp/zcs-bookworm}
if [ ! -x "$base/bin/sh" ]; then
  debootstrap --variant=minbase bookworm "$base" http://deb.debian.org/debian
fi
root=$(mktemp -d /var/tmp/zcs-install.XXXXXX)
daemon=
cleanup() {
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null || true
  umount "$root/proc" 2>/dev/null || true
  rm -rf "$root"
}
trap cleanup EXIT
cp -a "$base/." "$root/"
cp "$deb" "$root/tmp/"
mount -t proc proc "$root/proc"
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

echo "== apt install ./$(basename "$deb")"
in_root apt-get update -qq
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "/tmp/$(basename "$deb")"

echo "== what it installed"
in_root zerocopy-server --version
in_root proxyctl --version
in_root getent passwd zerocopy-server
test -L "$root/etc/systemd/system/multi-user.target.wants/zerocopy-server.service"
echo "unit enabled: $(readlink "$root/etc/systemd/system/multi-user.target.wants/zerocopy-server.service")"
grep -q '^/etc/zerocopy-server/config.toml$' "$root/var/lib/dpkg/info/zerocopy-server.conffiles"
grep -q '^/etc/logrotate.d/zerocopy-server$' "$root/var/lib/dpkg/info/zerocopy-server.conffiles"
test -f "$root/usr/share/man/man1/zerocopy-server.1.gz"
test -f "$root/usr/share/man/man1/proxyctl-upgrade.1.gz"
test -f "$root/usr/share/bash-completion/completions/proxyctl"
test -f "$root/usr/share/zsh/vendor-completions/_zerocopy-server"
test -f "$root/usr/share/fish/vendor_completions.d/proxyctl.fish"
in_root stat -c '%U:%G %a %n' /var/log/zerocopy-server
in_root zerocopy-server --check --config /etc/zerocopy-server/config.toml

echo "== the daemon on the default config, as its user"
mkdir -p "$root/run/zerocopy-server"
in_root chown zerocopy-server:zerocopy-server /run/zerocopy-server
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  setpriv --reuid=zerocopy-server --regid=zerocopy-server --init-groups zerocopy-server --config /etc/zerocopy-server/config.toml >"$root/tmp/daemon.log" 2>&1 &
daemon=$!  # chroot, env and setpriv each exec the next: this is the daemon's pid
for _ in $(seq 50); do
  curl -fsS -o /dev/null http://127.0.0.1:9901/readyz 2>/dev/null && break
  sleep 0.1
done
curl -fsS http://127.0.0.1:8080/ | grep -qi '<html'
curl -fsS http://127.0.0.1:9901/healthz
curl -fsS http://127.0.0.1:9901/readyz
in_root proxyctl status
for _ in $(seq 30); do [ -s "$root/var/log/zerocopy-server/access.log" ] && break; sleep 0.1; done
cat "$root/var/log/zerocopy-server/access.log"
kill -TERM "$daemon"
wait "$daemon" || { echo "the daemon did not drain cleanly:"; cat "$root/tmp/daemon.log"; exit 1; }

echo "== purge"
in_root env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq zerocopy-server
test ! -e "$root/usr/bin/zerocopy-server"
test ! -e "$root/etc/zerocopy-server/config.toml"
test ! -e "$root/var/log/zerocopy-server"
echo "ok: installed, ran and purged on a clean Debian $(cat "$root/etc/debian_version")"
