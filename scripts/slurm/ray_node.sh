#!/usr/bin/env bash
# This node's part of a Ray cluster inside one SLURM job (called by reproduce.sbatch via srun).
#
#   ray_node.sh ip                  print the address this node uses inside the allocation
#   ray_node.sh gcs-port            print the job's GCS port
#   ray_node.sh head                start the head (GCS + raylet) and block
#   ray_node.sh worker HEAD_IP:PORT start a worker raylet and block
#
# Every port comes from a block of 200 derived from SLURM_JOB_ID, so two jobs sharing a node
# (yours or another user's) do not fight over Ray's fixed defaults (GCS 6379, client 10001,
# dashboard 8265, dashboard agent 52365, autoscaler metrics 44217). Token auth must already be
# on in the environment (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN_PATH): reproduce.sbatch sets both.
set -euo pipefail

: "${SLURM_JOB_ID:?run inside a SLURM job}"
RAY_BIN=${RAY_BIN:-ray}
PYTHON_BIN=${PYTHON_BIN:-python}

# 20000 + 200 * (job id mod 60): blocks 20000-20199 ... 31800-31999, below Linux's ephemeral
# range (32768-60999, where outgoing connections take their ports). Two jobs on one node whose
# ids agree mod 60 would collide: the second head fails to bind and says so; set RAY_PORT_BASE
# (e.g. a range your site reserves for jobs) and resubmit.
base=${RAY_PORT_BASE:-$((20000 + 200 * (SLURM_JOB_ID % 60)))}
gcs_port=$base
node_manager_port=$((base + 1))
object_manager_port=$((base + 2))
runtime_env_agent_port=$((base + 3))
dashboard_agent_listen_port=$((base + 4))
dashboard_agent_grpc_port=$((base + 5))
metrics_export_port=$((base + 6))
client_server_port=$((base + 7))
export AUTOSCALER_METRIC_PORT=$((base + 8))   # the head's Prometheus endpoint (fixed 44217 otherwise)
min_worker_port=$((base + 10))
max_worker_port=$((base + 199))               # one port per worker process: 190 per node

node_ip() {
    # RAY_NODE_IFACE (e.g. ib0, eth1): that interface's IPv4 address; otherwise the address
    # this node's hostname resolves to, which on most clusters is the internal network.
    local ip
    if [[ -n "${RAY_NODE_IFACE:-}" ]]; then
        ip=$(ip -4 -o addr show dev "$RAY_NODE_IFACE" | awk '{split($4, a, "/"); print a[1]; exit}')
    else
        ip=$(getent ahostsv4 "$(hostname)" | awk '{print $1; exit}')
    fi
    if [[ -z "$ip" ]]; then
        echo "error: no IPv4 address for ${RAY_NODE_IFACE:-$(hostname)} on $(hostname); set RAY_NODE_IFACE to the allocation's internal interface" >&2
        exit 2
    fi
    if [[ "$ip" == 127.* ]]; then
        echo "error: $(hostname) resolves to loopback $ip, which other nodes cannot reach; set RAY_NODE_IFACE to the allocation's internal interface" >&2
        exit 2
    fi
    if ! "$PYTHON_BIN" -c 'import ipaddress, sys; sys.exit(not ipaddress.ip_address(sys.argv[1]).is_private)' "$ip"; then
        if [[ "${RAY_ALLOW_PUBLIC_IP:-0}" != 1 ]]; then
            echo "error: $ip on $(hostname) is not a private address; pick the internal interface with RAY_NODE_IFACE (or set RAY_ALLOW_PUBLIC_IP=1 if your site firewalls it)" >&2
            exit 2
        fi
    fi
    echo "$ip"
}

common_args() {
    local ip=$1
    args=(--node-ip-address "$ip"
          --node-manager-port "$node_manager_port"
          --object-manager-port "$object_manager_port"
          --runtime-env-agent-port "$runtime_env_agent_port"
          --dashboard-agent-listen-port "$dashboard_agent_listen_port"
          --dashboard-agent-grpc-port "$dashboard_agent_grpc_port"
          --metrics-export-port "$metrics_export_port"
          --min-worker-port "$min_worker_port"
          --max-worker-port "$max_worker_port"
          --temp-dir "/tmp/ray-$SLURM_JOB_ID"
          --num-cpus "${SLURM_CPUS_PER_TASK:-1}"
          --num-gpus "${SLURM_GPUS_PER_TASK:-0}"
          --disable-usage-stats
          --block)
}

case "${1:-}" in
    ip)
        node_ip ;;
    gcs-port)
        echo "$gcs_port" ;;
    head)
        ip=$(node_ip)
        common_args "$ip"
        # The Ray Client server only starts when its dependency (grpc) is importable; giving
        # it a port without that dependency is an error in `ray start`.
        client=()
        if "$PYTHON_BIN" -c 'import grpc' 2>/dev/null; then
            client=(--ray-client-server-port "$client_server_port")
        fi
        exec "$RAY_BIN" start --head --port "$gcs_port" --include-dashboard false \
            "${client[@]}" "${args[@]}" ;;
    worker)
        head_address=${2:?usage: ray_node.sh worker HEAD_IP:PORT}
        ip=$(node_ip)
        common_args "$ip"
        exec "$RAY_BIN" start --address "$head_address" "${args[@]}" ;;
    *)
        echo "error: usage: ray_node.sh ip | gcs-port | head | worker HEAD_IP:PORT (got '${1:-}')" >&2
        exit 2 ;;
esac
