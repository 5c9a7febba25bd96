#!/usr/bin/env bash
# Installs what the tests use besides cargo (Debian 12, as root): nftables to check rulesets
# independently, podman + runc + busybox-static for the real-runtime CNI test. Benchmarks
# also use containernetworking-plugins (the reference plugins) and iperf3. The DNS tests ask with
# dig (dnsutils). The demo pings as the documents do when ping (iputils-ping) is there.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
need=()
for pkg in iproute2 nftables podman runc busybox-static containernetworking-plugins iperf3 dnsutils iputils-ping; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
