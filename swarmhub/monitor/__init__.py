"""The swarmhub-agent that runs on the hosts (log shipping and alerts)."""
