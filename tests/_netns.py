"""A network namespace with a redis-server inside, for partition tests (Linux, root).

::

    with NetworkNamespace() as ns, ns.redis_server() as server:
        bus = EventBus.from_url(server.url, service_name="svc")
        ns.partition()  # every packet in or out of the namespace is dropped
        ns.heal()

:class:`NetworkNamespace` creates ``eb-<random>``, a veth pair with one end moved
into it, and a /30 of link-local addresses (169.254.0.0/16, picked so that it
overlaps no route of the machine) on the two ends. It touches nothing else: no other
interface, address, route or namespace. :meth:`NetworkNamespace.partition` drops
every packet with iptables ``DROP`` rules inside the namespace when ``iptables``
works there, else by taking the namespace's end of the pair down (the kernel then
drops what either side sends, silently, as a partition does; no RST, no FIN).
:meth:`NetworkNamespace.close` deletes the namespace, which destroys the pair.

:func:`netns_unusable` says why none of this can run here (not Linux, not root,
``ip`` missing, or the kernel refused), for a ``pytest.skip``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

from _servers import RedisServerStartError, find_redis_server, free_port

__all__ = ["NamespacedRedis", "NetworkNamespace", "netns_unusable"]

#: Link-local /30s are drawn from 169.254.64.0-169.254.127.255: clear of 169.254.0.x,
#: 169.254.255.x (reserved) and 169.254.169.254 (cloud metadata services).
_SUBNETS = ipaddress.ip_network("169.254.64.0/18")
_COMMAND_TIMEOUT = 10.0


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; raise with its stderr when it fails."""
    done = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=_COMMAND_TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"`ip {' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}"
        )
    return done


def netns_unusable() -> str | None:
    """Why a network namespace cannot be made here, or None when it can."""
    if os.uname().sysname != "Linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "creating a network namespace needs root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    name = f"eb-probe-{uuid.uuid4().hex[:8]}"
    try:
        _ip("netns", "add", name)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns add` does not work here: {exc}"
    try:
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns exec` does not work here: {exc}"
    finally:
        with contextlib.suppress(Exception):
            _ip("netns", "delete", name)
    return None


def _used_networks() -> list[ipaddress.IPv4Network]:
    """The IPv4 networks the machine routes now (root namespace, every table)."""
    networks = []
    for line in _ip("-4", "route", "show", "table", "all").stdout.splitlines():
        first = line.split()[0] if line.split() else ""
        if first in ("broadcast", "local", "unicast", "multicast", "blackhole"):
            first = line.split()[1]
        if first == "default":
            continue
        with contextlib.suppress(ValueError):
            networks.append(ipaddress.ip_network(first, strict=False))
    return [n for n in networks if isinstance(n, ipaddress.IPv4Network)]


def _free_subnet() -> ipaddress.IPv4Network:
    used = _used_networks()
    candidates = list(_SUBNETS.subnets(new_prefix=30))
    random.shuffle(candidates)
    for subnet in candidates:
        if not any(subnet.overlaps(network) for network in used):
            return subnet
    raise RuntimeError(f"no /30 of {_SUBNETS} is free of the machine's routes")


class NetworkNamespace:
    """``eb-<random>``: a namespace joined to this one by a veth pair; see the module doc.

    Attributes:
        name: the namespace's name.
        host_address: the address of the pair's end in this (the root) namespace.
        address: the address of the end inside the namespace.
        method: how :meth:`partition` drops packets (``iptables`` or ``link-down``),
            chosen on :meth:`create`.
    """

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.name = f"eb-{tag}"
        self._host_if = f"eb{tag}h"  # interface names: at most 15 characters
        self._ns_if = f"eb{tag}n"
        self.host_address = ""
        self.address = ""
        self.method = ""
        self._created = False
        self.partitioned = False

    def create(self) -> NetworkNamespace:
        """Create the namespace, the pair and the addresses; undone by :meth:`close`."""
        subnet = _free_subnet()
        host, inside = (str(a) for a in subnet.hosts())
        try:
            _ip("netns", "add", self.name)
            self._created = True
            _ip("link", "add", self._host_if, "type", "veth", "peer", "name", self._ns_if)
            _ip("link", "set", self._ns_if, "netns", self.name)
            _ip("addr", "add", f"{host}/30", "dev", self._host_if)
            _ip("link", "set", self._host_if, "up")
            self.exec("ip", "addr", "add", f"{inside}/30", "dev", self._ns_if)
            self.exec("ip", "link", "set", self._ns_if, "up")
            self.exec("ip", "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        self.host_address, self.address = host, inside
        self.method = "iptables" if self._iptables_works() else "link-down"
        return self

    def exec(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace; raise with its stderr when it fails."""
        return _ip("netns", "exec", self.name, *args)

    def _iptables_works(self) -> bool:
        if shutil.which("iptables") is None:
            return False
        try:
            self.exec("iptables", "-w", "-L", "INPUT", "-n")
        except (RuntimeError, subprocess.TimeoutExpired):
            return False
        return True

    def partition(self) -> None:
        """Drop every packet into and out of the namespace, silently."""
        if self.method == "iptables":
            self.exec("iptables", "-w", "-I", "INPUT", "1", "-i", self._ns_if, "-j", "DROP")
            self.exec("iptables", "-w", "-I", "OUTPUT", "1", "-o", self._ns_if, "-j", "DROP")
        else:
            self.exec("ip", "link", "set", self._ns_if, "down")
        self.partitioned = True

    def heal(self) -> None:
        """Undo :meth:`partition`."""
        if self.method == "iptables":
            self.exec("iptables", "-w", "-D", "INPUT", "-i", self._ns_if, "-j", "DROP")
            self.exec("iptables", "-w", "-D", "OUTPUT", "-o", self._ns_if, "-j", "DROP")
        else:
            self.exec("ip", "link", "set", self._ns_if, "up")
        self.partitioned = False

    def redis_server(self) -> NamespacedRedis:
        """A redis-server inside this namespace, bound to :attr:`address` (not started)."""
        return NamespacedRedis(self)

    def close(self) -> None:
        """Delete the namespace (and with it the pair); safe to call again."""
        if not self._created:
            return
        self._created = False
        try:
            _ip("netns", "delete", self.name)
        finally:
            # The pair dies with the namespace; make sure of it, quietly.
            with contextlib.suppress(Exception):
                if Path(f"/sys/class/net/{self._host_if}").exists():
                    _ip("link", "delete", self._host_if)

    def __enter__(self) -> NetworkNamespace:
        return self.create()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<NetworkNamespace {self.name} {self.host_address} <-> {self.address}>"


class NamespacedRedis:
    """One redis-server inside a :class:`NetworkNamespace`, stopped by its PID.

    ``ip netns exec`` execs the server in place, so the PID of the process started
    here is the server's own.
    """

    def __init__(self, namespace: NetworkNamespace, *, startup_timeout: float = 10.0) -> None:
        self.namespace = namespace
        self.port = free_port()  # a fresh namespace has every port free; never 6379
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    @property
    def url(self) -> str:
        """``redis://<namespace address>:PORT/0``."""
        return f"redis://{self.namespace.address}:{self.port}/0"

    def start(self) -> NamespacedRedis:
        """Start the server and wait until it answers PING from this namespace."""
        self._dir = Path(tempfile.mkdtemp(prefix="eventbus-netns-redis-"))
        log = (self._dir / "redis-server.log").open("wb")
        command = ["ip", "netns", "exec", self.namespace.name, find_redis_server()]
        command += ["--bind", self.namespace.address, "--port", str(self.port)]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        # Bound to the pair's address only, in a namespace of its own: without this,
        # Redis (no password, non-loopback bind) refuses every client.
        command += ["--protected-mode", "no", "--dir", str(self._dir)]
        with log:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while not self.ping():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                tail = (self._dir / "redis-server.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RedisServerStartError(f"redis-server in {self.namespace!r}: {tail}")
            time.sleep(0.02)
        return self

    def ping(self, timeout: float = 0.5) -> bool:
        """Whether the server answers PING within ``timeout`` seconds."""
        try:
            with socket.create_connection((self.namespace.address, self.port), timeout) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM the server by its PID (SIGKILL after 5 s), reap it, remove its directory."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(5.0)
                except subprocess.TimeoutExpired:
                    proc.kill()
            proc.wait()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> NamespacedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
