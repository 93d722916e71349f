"""The websocket ↔ VNC bridge and the RFB handshake it performs on the head node."""
