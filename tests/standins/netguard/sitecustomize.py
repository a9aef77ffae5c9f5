"""Loopback only, for the subprocesses a test starts (the CLI, a Jupyter server).

Put this folder first on PYTHONPATH and name a file in JC_NETGUARD_LOG: every connection or name
lookup for anything but this machine is refused and written to that file, which the test then
expects to be empty. So no credential in a child process can probe the cloud metadata address or
a sign-in endpoint unnoticed.
"""
import ipaddress
import os
import socket

_LOG = os.environ.get("JC_NETGUARD_LOG")


def _loopback(host) -> bool:
    if not isinstance(host, str) or host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _refuse(what: str) -> None:
    with open(_LOG, "a") as f:
        f.write(f"{os.getpid()} {what}\n")


if _LOG:
    _connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            _refuse(f"connect {address!r}")
            raise ConnectionRefusedError(f"network guard: no connection to {address!r}")
        return _connect(sock, address)

    def connect_ex(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            _refuse(f"connect {address!r}")
            return 111
        return _connect_ex(sock, address)

    def getaddrinfo(host, *args, **kw):
        if isinstance(host, bytes):
            host = host.decode()
        if not _loopback(host):
            _refuse(f"resolve {host!r}")
            raise socket.gaierror(socket.EAI_NONAME, f"network guard: no lookup of {host!r}")
        return _getaddrinfo(host, *args, **kw)

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.getaddrinfo = getaddrinfo
