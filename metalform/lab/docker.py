"""A real Docker engine for the lab and the tests: `dockerd` on a unix socket, no network.

`DockerPeer` runs `dockerd` (Debian `docker.io`) with everything in its own state directory
(data, exec root, pid file, socket, log), without a bridge or iptables rules, so it never
touches the host's network, and starts it in a session of its own. No registry is reachable,
so it builds the image `local/busybox:1` from the host's static busybox (Debian
`busybox-static`). `attach` finds a running peer again from its directory (`metalform lab
down`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from metalform.lab.process import PeerError, log_tail, stop_group

BUSYBOX_IMAGE = "local/busybox:1"
"""The image every lab and test Service runs (`sh`, `sleep`, `httpd`, ... as busybox applets)."""

SOCKET_FILE = "docker.sock"
PID_FILE = "dockerd.pid"
LOG_FILE = "dockerd.log"
EXEC_FILE = "exec-root"
"""Where the exec root is, when it could not live in the state directory (path too long)."""

UNIX_PATH_MAX = 107
_EXEC_SOCKET_ROOM = 48
"""containerd puts its sockets this deep below the exec root (`containerd/containerd.sock...`)."""

SERVICE_COMMAND = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]
"""A long-running command that exits at once on SIGTERM (PID 1 ignores it unless trapped)."""


INDEX_PAGE = "<!doctype html><title>Metalform lab</title><p>Served by a Metalform Service.\n"
"""`/www/index.html` of the image, so `httpd -h /www` has something to serve."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if fields and fields[0] == "Z":  # a zombie is not running any more
            return False
    return True


def _is_dockerd(pid: int, socket: Path) -> bool:
    """True when `pid` is the dockerd serving `socket` (guards against a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"dockerd" in cmdline and str(socket).encode() in cmdline


def _terminate_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM it when its parent dies."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def find_busybox() -> Path:
    """The host's statically linked busybox, which runs in an image with nothing else in it."""
    found = shutil.which("busybox") or "/bin/busybox"
    path = Path(found)
    if not path.is_file():
        raise PeerError("busybox is not installed (Debian package busybox-static)")
    head = path.read_bytes()[:8192]
    if b"ld-linux" in head or b"/lib/ld-" in head:
        raise PeerError(f"{path} is dynamically linked: install busybox-static")
    return path


def busybox_rootfs(busybox: Path) -> bytes:
    """A root file system tar: busybox, a link per applet, and the usual empty folders."""
    applets = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for folder in ("bin", "dev", "etc", "proc", "sys", "tmp", "var", "www"):
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if folder == "tmp" else 0o755
            tar.addfile(info)
        tar.add(str(busybox), arcname="bin/busybox")
        page = INDEX_PAGE.encode()
        index = tarfile.TarInfo("www/index.html")
        index.size, index.mode = len(page), 0o644
        tar.addfile(index, io.BytesIO(page))
        for applet in applets:
            if applet == "busybox":
                continue
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    return buffer.getvalue()


class DockerPeer:
    """A `dockerd` serving `unix://STATE_DIR/docker.sock`; state survives a restart."""

    def __init__(
        self, state_dir: Path | str, *, shutdown_timeout: int = 2, die_with_parent: bool = False
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.shutdown_timeout = shutdown_timeout
        self.die_with_parent = die_with_parent
        """SIGTERM dockerd when the process that started it dies (a test worker killed before
        its teardown); the lab's engine outlives `metalform lab up` instead."""
        self._process: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        if len(str(self.socket).encode()) > UNIX_PATH_MAX:
            raise PeerError(
                f"{self.socket} is longer than a unix socket path may be "
                f"({UNIX_PATH_MAX} bytes): use a shorter state directory"
            )

    # -- where things are --------------------------------------------------------------------

    @property
    def socket(self) -> Path:
        return self.state_dir / SOCKET_FILE

    @property
    def url(self) -> str:
        """The Provider `url` of this engine."""
        return f"unix://{self.socket}"

    @property
    def exec_root(self) -> Path:
        recorded = self.state_dir / EXEC_FILE
        if recorded.exists():
            return Path(recorded.read_text(encoding="utf-8").strip())
        inside = self.state_dir / "exec"
        if len(str(inside).encode()) + _EXEC_SOCKET_ROOM <= UNIX_PATH_MAX:
            return inside
        # containerd's sockets would not fit below the state directory: use a short folder.
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"mf-docker-{digest}"

    @property
    def pid(self) -> int | None:
        if self._pid is None:
            with contextlib.suppress(FileNotFoundError, ValueError):
                self._pid = int((self.state_dir / PID_FILE).read_text().strip())
        return self._pid

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def attach(cls, state_dir: Path | str) -> DockerPeer:
        """The peer whose state is in `state_dir`, running or not (e.g. to stop it)."""
        peer = cls(state_dir)
        if not peer.state_dir.exists():
            raise PeerError(f"no Docker lab in {peer.state_dir}")
        return peer

    def is_running(self) -> bool:
        pid = self.pid
        return pid is not None and _pid_alive(pid) and _is_dockerd(pid, self.socket)

    def start(self, timeout: float = 30.0) -> DockerPeer:
        """Start dockerd, wait until its API answers, and build the busybox image."""
        if self.is_running():
            raise PeerError(f"a Docker lab is already running from {self.state_dir}")
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise PeerError("dockerd is not installed (Debian package docker.io)")
        busybox = find_busybox()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        exec_root = self.exec_root
        exec_root.mkdir(parents=True, exist_ok=True)
        (self.state_dir / EXEC_FILE).write_text(f"{exec_root}\n", encoding="utf-8")
        self.socket.unlink(missing_ok=True)
        (self.state_dir / PID_FILE).unlink(missing_ok=True)
        command = [
            dockerd,
            "--data-root",
            str(self.state_dir / "data"),
            "--exec-root",
            str(exec_root),
            "--pidfile",
            str(self.state_dir / PID_FILE),
            "-H",
            self.url,
            # No bridge and no iptables/forwarding changes: the engine must not touch the
            # host's network; containers run with network mode `none` or `host`.
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--ip-forward=false",
            "--shutdown-timeout",
            str(self.shutdown_timeout),
        ]
        with open(self.state_dir / LOG_FILE, "ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                start_new_session=True,
                preexec_fn=_terminate_with_parent if self.die_with_parent else None,
            )
        self._pid = self._process.pid
        try:
            self._wait_ready(timeout)
            self.ensure_image(busybox)
        except BaseException:
            self._terminate(signal.SIGKILL)
            raise
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """Remove the lab's containers and stop dockerd (images and data are kept)."""
        if not self.is_running():
            self._reap()
            return
        with contextlib.suppress(Exception):
            self.remove_containers()
        self._terminate(signal.SIGTERM, timeout)
        self._unmount_leftovers()

    def destroy(self) -> None:
        """Stop and delete everything, the state directory included."""
        exec_root = self.exec_root
        self.stop()
        for folder in (self.state_dir, exec_root):
            shutil.rmtree(folder, ignore_errors=True)

    def __enter__(self) -> DockerPeer:
        return self.start() if not self.is_running() else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- using it ----------------------------------------------------------------------------

    def client(self) -> Any:
        """A docker SDK client of this engine (the caller closes it)."""
        import docker

        return docker.DockerClient(base_url=self.url, timeout=30)

    def ensure_image(self, busybox: Path | None = None) -> None:
        """Build `local/busybox:1` unless the engine has it already."""
        import docker.errors

        client = self.client()
        try:
            try:
                client.images.get(BUSYBOX_IMAGE)
                return
            except docker.errors.ImageNotFound:
                pass
            repository, tag = BUSYBOX_IMAGE.rsplit(":", 1)
            client.api.import_image_from_data(
                busybox_rootfs(busybox or find_busybox()),
                repository=repository,
                tag=tag,
                changes=['CMD ["/bin/sh"]'],
            )
            client.images.get(BUSYBOX_IMAGE)  # raises when the import did not work
        finally:
            client.close()

    def remove_containers(self) -> int:
        """Remove every container of the engine, managed or not (SIGKILL: it is a teardown)."""
        client = self.client()
        try:
            containers = client.containers.list(all=True, sparse=True)
            for container in containers:
                client.api.remove_container(container.id, force=True)
            return len(containers)
        finally:
            client.close()

    # -- internals ---------------------------------------------------------------------------

    def _wait_ready(self, timeout: float) -> None:
        import docker

        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise PeerError(
                    f"dockerd exited with code {self._process.returncode}: {self._log_tail()}"
                )
            if self.socket.exists():
                try:
                    client = docker.DockerClient(base_url=self.url, timeout=5)
                    try:
                        client.ping()
                        return
                    finally:
                        client.close()
                except Exception as exc:  # not up yet: any failure means "try again"
                    last = str(exc)
            time.sleep(0.05)
        raise PeerError(
            f"dockerd did not answer within {timeout:.0f}s ({last}): {self._log_tail()}"
        )

    def _log_tail(self) -> str:
        return log_tail(self.state_dir / LOG_FILE, 15)

    def _terminate(self, sig: signal.Signals, timeout: float = 20.0) -> None:
        # dockerd leads its own session (and its containerd is in it): signal only that group.
        pid = self.pid
        stop_group(pid, lambda: pid is not None and _pid_alive(pid), self._process, sig, timeout)

    def _unmount_leftovers(self) -> None:
        """Unmount what dockerd left mounted below its folders (the host network namespace it
        binds for `host` containers), so they can be deleted."""
        roots = [str(self.state_dir), str(self.exec_root)]
        try:
            lines = Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines()
        except OSError:
            return
        points = []
        for line in lines:
            fields = line.split()
            if len(fields) > 4:
                # mountinfo escapes spaces and friends as octal (\040)
                point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
                if any(point == r or point.startswith(r + os.sep) for r in roots):
                    points.append(point)
        umount = shutil.which("umount")
        for point in sorted(points, key=len, reverse=True):
            if umount is not None:
                subprocess.run([umount, "-l", point], capture_output=True, check=False)

    def _reap(self) -> None:
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=5)
