#!/usr/bin/env bash
# Makes a Docker engine answer on the local socket for the `docker` driver's tests and
# bench, and builds their images without a registry (none is reachable here):
#   rollback-test/web:ok     busybox httpd serving /www (index.html says "ok")
#   rollback-test/web:v2     the same with "v2" (a second version to roll back from)
#   rollback-test/web:sick   a HEALTHCHECK that always fails (unhealthy target)
# Images are made with `docker import` from a rootfs holding Debian's busybox-static.
# Safe to run again: a running engine and existing images are left alone.
set -euo pipefail

log() { printf '[setup-docker] %s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }
apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! have dockerd; then
  log "installing docker.io"
  apt_install docker.io
fi
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  mkdir -p /var/log
  # Without systemd: start the daemon ourselves; it keeps running for later runs.
  nohup dockerd >/var/log/dockerd-rollback-tests.log 2>&1 &
  for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { log "dockerd did not come up; see /var/log/dockerd-rollback-tests.log"; tail -20 /var/log/dockerd-rollback-tests.log >&2; exit 1; }
fi

# The image needs a static busybox (no libc in the rootfs): Debian's busybox-static.
if ! dpkg -s busybox-static >/dev/null 2>&1; then
  log "installing busybox-static"
  apt_install busybox-static
fi

build() { # tag, index text, extra --change...
  local tag=$1 text=$2; shift 2
  docker image inspect "$tag" >/dev/null 2>&1 && return 0
  local root
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/www" "$root/tmp" "$root/etc"
  cp /bin/busybox "$root/bin/busybox"
  for a in sh httpd wget sleep cat echo ls true false kill; do ln -s busybox "$root/bin/$a"; done
  printf '%s\n' "$text" >"$root/www/index.html"
  printf 'root:x:0:0:root:/:/bin/sh\n' >"$root/etc/passwd"
  log "building $tag"
  tar -C "$root" -c . | docker import "$@" - "$tag" >/dev/null
  rm -rf "$root"
}

# httpd runs in the foreground as PID 1 without a SIGTERM handler, and the kernel does
# not apply default signal actions to a namespace's PID 1: like many real images, these
# ignore SIGTERM, so `docker stop` waits the whole grace out (what benches/docker.sh measures).
serve='["/bin/busybox","httpd","-f","-p","8080","-h","/www"]'
build rollback-test/web:ok ok \
  --change "ENV PATH=/bin APP_MODE=default" --change "EXPOSE 8080" --change "WORKDIR /www" \
  --change "LABEL org.example.image=web" --change "CMD $serve" \
  --change 'HEALTHCHECK --interval=1s --timeout=1s --retries=3 CMD ["/bin/busybox","wget","-q","-O","/dev/null","http://127.0.0.1:8080/"]'
build rollback-test/web:v2 v2 \
  --change "ENV PATH=/bin APP_MODE=default" --change "EXPOSE 8080" --change "WORKDIR /www" \
  --change "LABEL org.example.image=web" --change "CMD $serve" \
  --change 'HEALTHCHECK --interval=1s --timeout=1s --retries=3 CMD ["/bin/busybox","wget","-q","-O","/dev/null","http://127.0.0.1:8080/"]'
build rollback-test/web:sick sick \
  --change "ENV PATH=/bin" --change "EXPOSE 8080" --change "CMD $serve" \
  --change 'HEALTHCHECK --interval=1s --timeout=1s --retries=2 CMD ["/bin/busybox","false"]'
log "docker ready: $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})')"
