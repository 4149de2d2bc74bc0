#!/usr/bin/env bash
# An sshd on 127.0.0.1:2022 for the tests that reach this machine's Docker engine over
# ssh (`host = "ssh://..."`), with keys of its own, as the operator's jump to a Docker
# host would be. Writes DIR/ssh_config (host alias `rollback-ssh-test`, the client key,
# a known_hosts file with the server key): `ssh -F DIR/ssh_config rollback-ssh-test`.
#
#   bash scripts/ssh-server.sh start DIR
#   bash scripts/ssh-server.sh stop DIR
set -euo pipefail
cmd=${1:?start|stop}
DIR=${2:?directory}
PORT=${ROLLBACK_SSH_PORT:-2022}

stop() {
  if [ -f "$DIR/sshd.pid" ]; then
    kill "$(cat "$DIR/sshd.pid")" 2>/dev/null || true
    rm -f "$DIR/sshd.pid"
  fi
}

if [ "$cmd" = stop ]; then
  stop
  exit 0
fi

if [ ! -x /usr/sbin/sshd ]; then
  echo "[ssh-server] installing openssh-server" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null
fi
if [ -f "$DIR/sshd.pid" ] && kill -0 "$(cat "$DIR/sshd.pid")" 2>/dev/null; then
  exit 0
fi
mkdir -p "$DIR" /run/sshd
chmod 700 "$DIR"
[ -f "$DIR/host" ] || ssh-keygen -q -t ed25519 -N '' -f "$DIR/host"
[ -f "$DIR/client" ] || ssh-keygen -q -t ed25519 -N '' -f "$DIR/client"
cp "$DIR/client.pub" "$DIR/authorized_keys"
cat >"$DIR/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $PORT
HostKey $DIR/host
AuthorizedKeysFile $DIR/authorized_keys
PidFile $DIR/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowStreamLocalForwarding yes
AllowTcpForwarding yes
EOF
printf '[127.0.0.1]:%s %s\n' "$PORT" "$(cut -d' ' -f1,2 "$DIR/host.pub")" >"$DIR/known_hosts"
cat >"$DIR/ssh_config" <<EOF
Host rollback-ssh-test
  HostName 127.0.0.1
  Port $PORT
  User root
  IdentityFile $DIR/client
  IdentitiesOnly yes
  UserKnownHostsFile $DIR/known_hosts
  StrictHostKeyChecking yes
EOF
/usr/sbin/sshd -f "$DIR/sshd_config" -E "$DIR/sshd.log"
for _ in $(seq 100); do
  if ssh -F "$DIR/ssh_config" -o BatchMode=yes rollback-ssh-test true 2>/dev/null; then
    echo "[ssh-server] sshd ready on 127.0.0.1:$PORT ($DIR/ssh_config)" >&2
    exit 0
  fi
  sleep 0.1
done
echo "[ssh-server] sshd did not answer; its log:" >&2
cat "$DIR/sshd.log" >&2 || true
exit 1
