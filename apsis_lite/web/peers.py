"""Which local user is at the other end of a loopback connection (Linux).

Browsers send a cookie for ``127.0.0.1`` to every port of that address, so a
program listening on another port (another user's, say) can receive the
session cookie and replay it. A server on a loopback address therefore ties
each browser session to the user whose browser logged in: the kernel knows
the owner of the client's socket, and tells it through the ``sock_diag``
netlink interface (what ``ss -e`` shows), one exact lookup per request, a few
tens of microseconds. Elsewhere (no netlink, another OS) the answer is None,
and sessions are not tied to a user.
"""

import socket
import struct

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
NO_COOKIE = 0xFFFFFFFF
ALL_STATES = 0xFFFFFFFF
NLMSG_HEADER = struct.Struct("=IHHII")
# inet_diag_msg: family, state, timer, retrans; the 48-byte socket id; expires, rqueue, wqueue, uid.
UID_OFFSET = NLMSG_HEADER.size + 4 + 48 + 12


def local_address(host):
    """The address a server bound to the loopback name ``host`` listens on (``localhost`` -> ``127.0.0.1``)."""
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.getaddrinfo(host, None, family, socket.SOCK_STREAM)[0][4][0]
    except (OSError, IndexError):
        return None


def peer_uid(peer_ip, peer_port, server_ip, server_port):
    """The uid owning the client end of the TCP connection from ``peer_ip:peer_port`` to
    ``server_ip:server_port``, or None if it cannot be told (not a local client, no netlink)."""
    try:
        family = socket.AF_INET6 if ":" in server_ip else socket.AF_INET
        if ":" in server_ip and "." in peer_ip and ":" not in peer_ip:
            peer_ip = "::ffff:" + peer_ip  # an IPv4 client of a dual-stack socket
        src = socket.inet_pton(family, peer_ip).ljust(16, b"\0")
        dst = socket.inet_pton(family, server_ip).ljust(16, b"\0")
        # The client's socket: its own end is the peer's address, its other end ours.
        sock_id = (struct.pack("!HH", int(peer_port), int(server_port)) + src + dst
                   + struct.pack("=III", 0, NO_COOKIE, NO_COOKIE))
        body = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, ALL_STATES) + sock_id
        message = NLMSG_HEADER.pack(NLMSG_HEADER.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0) + body
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as nl:
            nl.settimeout(1.0)
            nl.sendto(message, (0, 0))
            answer = nl.recv(8192)
    except (OSError, ValueError, AttributeError, struct.error):
        return None
    if len(answer) < UID_OFFSET + 4:
        return None
    _length, kind, _flags, _seq, _pid = NLMSG_HEADER.unpack_from(answer)
    if kind != SOCK_DIAG_BY_FAMILY:  # NLMSG_ERROR: no such socket here (a remote client)
        return None
    return struct.unpack_from("=I", answer, UID_OFFSET)[0]
