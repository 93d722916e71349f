"""What the head node and the compute nodes agree on: Redis keys, the job environment,
the registration JSON, VNC authentication. Imports nothing of vizdesk but ``config``;
changing anything here changes the wire contract (older nodes must keep working)."""
