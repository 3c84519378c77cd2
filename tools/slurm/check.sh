#!/usr/bin/env bash
# The job scripts `cargo xtask experiment ... --emit slurm` writes, checked by a real sbatch on
# a single-node Slurm cluster on this machine (Debian's slurm-wlm and munge, installed when
# missing; needs root): the tiny preset's script (CPU backend, no gres) with the user's own
# --sbatch options is accepted (`sbatch --test-only`), and the paper preset's (tch-cuda) asks
# for a GPU, which this GPU-less cluster refuses, as a real one without GPUs would.
# Run by .ci/run; locally: sudo bash tools/slurm/check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" != 0 ]; then
  # Installing and starting the daemons needs root; xtask's tests check the directives anyway.
  if sudo -n true 2>/dev/null; then exec sudo -E bash "$0" "$@"; fi
  echo "tools/slurm/check.sh: not root and no sudo: the real-Slurm check is skipped"
  exit 0
fi

# Setting the cluster up is the environment's part: if it fails (no package mirror, a host
# name Slurm cannot use), the check says so and is skipped; what the scripts' checks find fails.
skip() { echo "tools/slurm/check.sh: $*: the real-Slurm check is skipped"; exit 0; }
if ! command -v sbatch >/dev/null || ! command -v slurmctld >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q slurm-wlm munge >/dev/null 2>&1; } ||
    skip "slurm-wlm and munge could not be installed"
fi

host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p /etc/munge /var/log/munge /run/munge /var/lib/munge /etc/slurm \
  /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
chown -R munge:munge /etc/munge /var/log/munge /run/munge /var/lib/munge
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged || true
if [ ! -f /etc/slurm/slurm.conf ] || ! grep -q '^ClusterName=ril-ci$' /etc/slurm/slurm.conf; then
  cat > /etc/slurm/slurm.conf <<CONF
ClusterName=ril-ci
SlurmctldHost=$host
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SlurmUser=root
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ReturnToService=2
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
fi
pgrep -x munged >/dev/null || skip "munged did not start"
pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld || skip "slurmctld did not start"
pgrep -x slurmd >/dev/null || /usr/sbin/slurmd || skip "slurmd did not start"
up=
for _ in $(seq 60); do
  if sinfo -h -o %T 2>/dev/null | grep -q idle; then up=1; break; fi
  sleep 1
done
[ -n "$up" ] || skip "the node did not come up in 60 s ($(sinfo 2>&1 | tail -1))"
sinfo

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cargo xtask experiment all-orders --preset tiny --out "$out/tiny" --emit slurm \
  --sbatch=--partition=cpu --sbatch=--time=01:00:00 --sbatch=--cpus-per-task=1
grep -q -- '--gres' "$out/tiny/slurm.sh" && { echo "the tiny preset's script asks for a GPU"; exit 1; }
sbatch --test-only "$out/tiny/slurm.sh"

cargo xtask experiment all-orders --preset paper --out "$out/paper" --emit slurm
grep -q -- '^#SBATCH --gres=gpu:1$' "$out/paper/slurm.sh"
if msg=$(sbatch --test-only "$out/paper/slurm.sh" 2>&1); then
  echo "a GPU-less cluster accepted the paper preset's gres request: $msg"; exit 1
fi
echo "$msg" | grep -qi 'gres' || { echo "refused for another reason: $msg"; exit 1; }
echo "slurm: the tiny preset's script is accepted, the paper preset's gres refused without GPUs"
