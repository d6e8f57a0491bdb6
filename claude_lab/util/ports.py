"""Host ports: is one free, and if not, who holds it."""
from __future__ import annotations

import socket


def port_free(port: int, address: str = "127.0.0.1") -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, port))
        except OSError:
            return False
    # A wildcard listener also blocks the port for everyone; bind() above may not see it.
    if address not in ("0.0.0.0", "::"):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                return False
    return True


def free_port(address: str = "127.0.0.1") -> int:
    """A port the OS says is free on `address` now (a lab with port setting 0 takes one)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def port_holder(port: int) -> str | None:
    """'name (pid N)' of the process listening on the port, where the OS lets us see it."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="inet"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                try:
                    proc = psutil.Process(conn.pid)
                    return f"{proc.name()} (pid {conn.pid}: {' '.join(proc.cmdline())[:120]})"
                except psutil.Error:
                    return f"pid {conn.pid}"
    except Exception:  # permissions, platforms without net_connections
        return None
    return None
