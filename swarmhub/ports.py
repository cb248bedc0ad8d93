"""Ports that several parts of swarmhub must agree on, each written once.

chp (configurable-http-proxy) listens on the hub at CHP_PORT: the hub's compose file
publishes it, nginx on the proxy host forwards to it, the firewall opens it to the proxy
host only, and the runbook and the observer reach the hub's API through it on the hub.
"""

from __future__ import annotations

CHP_PORT = 8000
# The hub's REST API through chp, from the hub itself (no firewall rule is needed for that).
HUB_API = f"http://127.0.0.1:{CHP_PORT}/hub/api"
# chp's REST API (routes): on the hub stack's own bridge network only, reached by the hub.
CHP_API_PORT = 8001
# The hub's API, where users' servers (over the overlay), chp and the culler reach it.
HUB_PORT = 8081
# A user's server (DockerSpawner's port), reached by chp and the hub only.
USER_SERVER_PORT = 8888
# Monitoring (monitor.metrics). Prometheus, Alertmanager and the blackbox exporter listen on
# the hub's loopback only (reached over SSH); chp's metrics are published there too. Node
# exporters listen on every host, Docker's engine metrics (daemon.json's metrics-addr) on the
# hub and the nodes, both opened by the firewall to cluster hosts only.
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
BLACKBOX_PORT = 9115
NODE_EXPORTER_PORT = 9100
CHP_METRICS_PORT = 8002
# The admins' dashboard's front (swarmhub-dashboard, HubOAuth before Prometheus): on the hub's
# address on Docker's default bridge only, where chp reaches it; the firewall lets the hub's
# containers in, nothing else.
DASHBOARD_PORT = 9099
DOCKER_METRICS_PORT = 9323
