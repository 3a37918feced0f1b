#!/usr/bin/env bash
# A single-host SLURM cluster for development and the tests: munge, MariaDB + slurmdbd for
# accounting (submitit reads job states through sacct), slurmctld, and two slurmd daemons
# posing as nodes node1 and node2 on this machine. Debian 12, as root, no systemd.
#
#   slurm/cluster.sh up       # install what is missing, write the configs, start the daemons
#   slurm/cluster.sh status   # sinfo
#   slurm/cluster.sh down     # stop the daemons
#
# Idempotent: `up` on a running cluster only checks it. Logs: /var/log/slurm/.
set -euo pipefail

CLUSTER=launcher
CONF=/etc/slurm
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)

log() { echo "[cluster] $*" >&2; }

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return
  log "installing ${missing[*]}"
  # Keep the packages from starting daemons with Debian's default configs.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' RETURN
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

write_configs() {
  mkdir -p "$CONF" /var/spool/slurm /var/log/slurm /run/slurm /var/lib/slurm
  chown slurm:slurm /var/spool/slurm /var/log/slurm /run/slurm /var/lib/slurm
  grep -q ' node1' /etc/hosts || echo '127.0.0.1 node1 node2' >> /etc/hosts
  local cpus; cpus=$(nproc)
  cat > "$CONF/slurm.conf" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
AuthInfo=cred_expire=10
SchedulerParameters=bf_interval=2,sched_interval=5
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdSpoolDir=/var/spool/slurm/d-%n
SlurmdPidFile=/run/slurm/slurmd-%n.pid
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
MailProg=/bin/true
ReturnToService=2
MpiDefault=none
NodeName=node1 NodeHostname=localhost NodeAddr=127.0.0.1 Port=17001 CPUs=$cpus RealMemory=4000
NodeName=node2 NodeHostname=localhost NodeAddr=127.0.0.1 Port=17002 CPUs=$cpus RealMemory=4000
PartitionName=debug Nodes=node1,node2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
  cat > "$CONF/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
PidFile=/run/slurm/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  chown slurm:slurm "$CONF/slurmdbd.conf" && chmod 600 "$CONF/slurmdbd.conf"
}

running() { pgrep -f "$1" >/dev/null 2>&1; }

start_munge() {
  [ -f /etc/munge/munge.key ] || mungekey -c
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge && chown munge:munge /run/munge
  running munged || su -s /bin/sh munge -c munged
  for _ in $(seq 50); do munge -n | unmunge >/dev/null 2>&1 && return; sleep 0.1; done
  log "munge does not answer"; return 1
}

start_mariadb() {
  if ! running mariadbd; then
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null
    mkdir -p /run/mysqld /var/log/mysql && chown mysql:mysql /run/mysqld /var/log/mysql
    setsid mariadbd --user=mysql --skip-networking --log-error=/var/log/mysql/error.log >/dev/null 2>&1 < /dev/null &
  fi
  for _ in $(seq 100); do mariadb -e 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done
  mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
}

wait_for() {  # wait_for SECONDS COMMAND...
  local tries=$(( $1 * 10 )); shift
  for _ in $(seq "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

up() {
  install_packages
  write_configs
  start_munge
  start_mariadb
  running slurmdbd || slurmdbd
  wait_for 20 sacctmgr -n list cluster || { log "slurmdbd does not answer: /var/log/slurm/slurmdbd.log"; exit 1; }
  sacctmgr -n list cluster format=cluster | grep -qw "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
  running slurmctld || slurmctld
  wait_for 20 scontrol ping || { log "slurmctld does not answer: /var/log/slurm/slurmctld.log"; exit 1; }
  for node in node1 node2; do running "slurmd -N $node" || slurmd -N "$node"; done
  scontrol update NodeName=node1,node2 State=RESUME >/dev/null 2>&1 || true  # a node left INVAL before
  wait_for 30 sh -c '[ "$(sinfo -h -o %t | sort -u)" = idle ]' || { sinfo; log "nodes are not idle"; exit 1; }
  srun -N2 -n2 true
  log "up: $(sinfo -h -o '%P %D %t %N')"
}

down() {
  for daemon in slurmd slurmctld slurmdbd mariadbd munged; do
    pkill -x "$daemon" 2>/dev/null || continue
    # A daemon still shutting down would pass for a running one at the next `up`.
    wait_for 15 sh -c "! pgrep -x $daemon" || pkill -9 -x "$daemon" || true
  done
  log "down"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  status) sinfo ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
