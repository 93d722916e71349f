#!/usr/bin/env python3
"""Turn off TX checksum, scatter-gather and segmentation offloads on network devices.

On this sandbox's veth devices TCP stalls with the offloads on, and there is no
``ethtool`` binary: this does what ``ethtool -K DEV tx off sg off tso off gso off`` does,
through the SIOCETHTOOL ioctl. Run it inside the device's network namespace:

    nsenter --net=/run/netns/X python3 offloads_off.py [--gro] eth0 [DEV...]

``--gro`` also turns off generic receive offload (for a userspace relay reading frames
with AF_PACKET: it must never see a frame bigger than the MTU).

Exit 1 naming the device and setting when an ioctl fails.
"""

from __future__ import annotations

import ctypes
import fcntl
import socket
import struct
import sys

SIOCETHTOOL = 0x8946
# "set" commands of linux/ethtool.h (struct ethtool_value {u32 cmd; u32 data;})
SETTINGS = {
    "tx-checksum": 0x00000017,  # ETHTOOL_STXCSUM
    "scatter-gather": 0x00000019,  # ETHTOOL_SSG
    "tcp-segmentation": 0x0000001F,  # ETHTOOL_STSO
    "generic-segmentation": 0x00000024,  # ETHTOOL_SGSO
}
GRO = {"generic-receive": 0x0000002C}  # ETHTOOL_SGRO
GET = {  # the matching "get" commands, to verify
    "tx-checksum": 0x00000016,
    "scatter-gather": 0x00000018,
    "tcp-segmentation": 0x0000001E,
    "generic-segmentation": 0x00000023,
    "generic-receive": 0x0000002B,
}


def ethtool_value(sock: socket.socket, dev: str, cmd: int, data: int = 0) -> int:
    """One SIOCETHTOOL call with a struct ethtool_value; returns its data field."""
    value = ctypes.create_string_buffer(struct.pack("II", cmd, data), 8)
    ifreq = struct.pack("16sP", dev.encode(), ctypes.addressof(value))
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
    return int(struct.unpack("II", value.raw)[1])


def main(args: list[str]) -> int:
    settings = dict(SETTINGS)
    if args[:1] == ["--gro"]:
        settings.update(GRO)
        args = args[1:]
    devices = args
    if not devices:
        print("usage: offloads_off.py [--gro] DEV [DEV...]", file=sys.stderr)
        return 2
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for dev in devices:
            for name, cmd in settings.items():
                try:
                    ethtool_value(sock, dev, cmd, 0)
                    left = ethtool_value(sock, dev, GET[name])
                except OSError as exc:
                    print(f"offloads_off: {dev} {name}: {exc}", file=sys.stderr)
                    return 1
                if left:
                    print(f"offloads_off: {dev} {name} still on", file=sys.stderr)
                    return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
