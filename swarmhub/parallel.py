"""How many hosts (or probes of hosts) the provisioner works on at once.

Each waits on its own SSH round trips, so threads overlap well: with 8 at most, a cluster of
8 nodes (10 hosts) took two rounds of every step.
"""

MAX_PARALLEL = 32
