"""The sites of the lab (`metalform lab up --sites N`): a broker and a worker per site.

One `redis-server` on loopback (no persistence, a generated password in its own 0600 config
file, never on a command line), and per site its own Redfish BMC (a sushy-emulator with three
servers) and one `metalform worker --site NAME` whose environment alone holds that site's BMC
password. The centre's variables (broker, password, task and fingerprint keys) go to the lab's
env file; each site's BMC password to `sites/NAME/env`, as a site machine would keep it. An
inventory of both sites' servers is written to `sites/inventory/` to plan with `--broker`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from metalform.lab.process import PeerError, log_tail, running_as, stop_group
from metalform.lab.redfish import LabSystem, RedfishPeer

REDIS_PORT = 16379
SITES_DIR = "sites"
LAYOUT_FILE = "sites.json"
BROKER_PASSWORD_VAR = "METALFORM_BROKER_PASSWORD"
CENTRAL_VARS = (BROKER_PASSWORD_VAR, "METALFORM_TASK_KEY", "METALFORM_FINGERPRINT_KEY")
SERVERS_PER_SITE = 3

Say = Callable[[str], None]
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
"""The processes this process spawned, by pid: whoever stops one reaps it (no zombie)."""


def read_env(path: Path) -> dict[str, str]:
    """The variables of an env file written by `write_env` (empty when there is none)."""
    import shlex

    values: dict[str, str] = {}
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("export ") and "=" in line:
                key, _, value = line.removeprefix("export ").partition("=")
                values[key] = shlex.split(value)[0] if value else ""
    return values


def site_secret(root: Path, site: str) -> str:
    """The BMC password of `site`: kept in `sites/SITE/env`, generated at the first start."""
    import secrets

    return read_env(root / site / "env").get(bmc_password_var(site)) or secrets.token_urlsafe(12)


def site_names(count: int) -> list[str]:
    return [f"site{n}" for n in range(1, count + 1)]


def bmc_password_var(site: str) -> str:
    return f"METALFORM_{site.upper()}_BMC_PASSWORD"


def write_env(path: Path, values: Mapping[str, str], header: str) -> None:
    """`export VAR=value` lines, mode 0600 from the first byte."""
    import shlex

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(f"# {header}\n")
        for key, value in values.items():
            fh.write(f"export {key}={shlex.quote(value)}\n")


@dataclass(frozen=True)
class Layout:
    """Where the lab's sites run: written at `lab up`, read by `status` and `down`."""

    redis_port: int
    sites: dict[str, int]
    """Site name -> the loopback port of its BMC."""

    @property
    def broker(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def save(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        data = {"redisPort": self.redis_port, "sites": self.sites}
        (root / LAYOUT_FILE).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, root: Path) -> Layout | None:
        try:
            data = json.loads((root / LAYOUT_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return cls(redis_port=int(data["redisPort"]), sites=dict(data["sites"]))


class PidProcess:
    """A process of the lab's sites, found again by its pid file and its command line."""

    def __init__(self, directory: Path, marker: bytes) -> None:
        self.directory = directory
        self.marker = marker
        self.pid_file = directory / "pid"
        self.log = directory / "log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(self.pid_file.read_text().strip())
        return None

    def is_running(self) -> bool:
        pid = self.pid
        return pid is not None and running_as(pid, self.marker)

    def spawn(self, argv: list[str], env: Mapping[str, str]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=self.directory,
                start_new_session=True,  # outlives `lab up`; `lab down` stops its group
            )
        self.pid_file.write_text(f"{self.process.pid}\n")
        _CHILDREN[self.process.pid] = self.process

    def exited(self) -> str | None:
        """Why the process just spawned is gone (its log), or None while it runs."""
        if self.process is not None and self.process.poll() is not None:
            return f"exited with code {self.process.returncode}: {log_tail(self.log, 15)}"
        return None

    def stop(self) -> None:
        pid = self.pid
        stop_group(pid, self.is_running, _CHILDREN.pop(pid, None) if pid else self.process)
        self.pid_file.unlink(missing_ok=True)


def _redis_process(root: Path) -> PidProcess:
    return PidProcess(root / "redis", b"redis-server")


def _worker_process(root: Path, site: str) -> PidProcess:
    return PidProcess(root / site / "worker", f"worker\0--site\0{site}\0".encode())


def start_redis(root: Path, layout: Layout, password: str, timeout: float = 10.0) -> None:
    """redis-server on loopback, no snapshots or AOF; the password only in its config file."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise PeerError("redis-server is not installed (Debian package redis-server)")
    proc = _redis_process(root)
    proc.directory.mkdir(parents=True, exist_ok=True)
    conf = proc.directory / "redis.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(
            f"bind 127.0.0.1\nport {layout.redis_port}\nprotected-mode yes\n"
            f'save ""\nappendonly no\ndir {proc.directory}\nrequirepass "{password}"\n'
        )
    proc.spawn([binary, str(conf)], os.environ)
    client = redis.Redis(
        host="127.0.0.1", port=layout.redis_port, password=password, socket_timeout=1
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if why := proc.exited():
            raise PeerError(f"redis-server {why}")
        with contextlib.suppress(redis.RedisError):
            if client.ping():
                return
        time.sleep(0.05)
    proc.stop()
    raise PeerError(f"redis-server did not answer within {timeout:.0f}s: {log_tail(proc.log)}")


def start_worker(
    root: Path, layout: Layout, site: str, central: Mapping[str, str], bmc_password: str
) -> None:
    """`metalform worker --site SITE`: its site's BMC password in its environment only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("METALFORM_")}
    env.update(central)
    env[bmc_password_var(site)] = bmc_password
    proc = _worker_process(root, site)
    proc.spawn(
        [
            sys.executable, "-m", "metalform.cli", "worker", "--site", site,
            "--broker", layout.broker, "--broker-password-env", BROKER_PASSWORD_VAR,
            "--concurrency", "4",
        ],
        env,
    )  # fmt: skip


def wait_for_workers(
    root: Path, layout: Layout, password: str, timeout: float = 30.0
) -> dict[str, bool]:
    """Each site: whether its worker's heartbeat is in the broker (waits up to `timeout`)."""
    deadline = time.monotonic() + timeout
    beating = heartbeats(layout, password)
    while not all(beating.values()) and time.monotonic() < deadline:
        for site in layout.sites:
            if why := _worker_process(root, site).exited():
                raise PeerError(f"the worker of site {site} {why}")
        time.sleep(0.2)
        beating = heartbeats(layout, password)
    return beating


def heartbeats(layout: Layout, password: str) -> dict[str, bool]:
    import redis

    from metalform.sites.app import HEARTBEAT_PREFIX

    client = redis.Redis(
        host="127.0.0.1", port=layout.redis_port, password=password, socket_timeout=2
    )
    beating: dict[str, bool] = {}
    try:
        for site in layout.sites:
            beating[site] = any(True for _ in client.scan_iter(f"{HEARTBEAT_PREFIX}{site}:*"))
    except redis.RedisError:
        return dict.fromkeys(layout.sites, False)
    finally:
        client.close()
    return beating


def site_systems(site: str) -> list[LabSystem]:
    return [
        LabSystem(f"{site}-{n:03d}", name=f"{site}-{n:03d}", power_state="Off" if n == 1 else "On")
        for n in range(1, SERVERS_PER_SITE + 1)
    ]


def write_inventory(root: Path, layout: Layout) -> Path:
    """Both sites' servers and Credentials, each Credential a reference its workers resolve."""
    directory = root / "inventory"
    directory.mkdir(parents=True, exist_ok=True)
    for site, port in layout.sites.items():
        docs = [
            f"apiVersion: metalform/v1\nkind: Credential\nmetadata: {{name: bmc-{site}}}\n"
            f"spec:\n  username: admin\n  password: {{fromEnv: {bmc_password_var(site)}}}\n"
        ]
        for system in site_systems(site):
            docs.append(
                f"apiVersion: metalform/v1\nkind: Server\nmetadata:\n  name: {system.name}\n"
                f"  labels: {{site: {site}}}\nspec:\n  bmc: {{driver: redfish, address: "
                f'"http://127.0.0.1:{port}", systemId: {system.identity}, '
                f"credential: bmc-{site}}}\n  power: On\n"
            )
        (directory / f"{site}.yaml").write_text("---\n".join(docs))
    return directory


_BMCS: dict[Path, RedfishPeer] = {}
"""The BMCs this process started: stopped through the same object, which reaps its child."""


def _bmc(root: Path, site: str, port: int, password: str | None = None) -> RedfishPeer:
    path = (root / site / "redfish").resolve()
    if password is None:
        return _BMCS.get(path) or RedfishPeer.attach(path)
    peer = RedfishPeer(
        path, site_systems(site), port=port, username="admin", password=password, power_delay=0.5
    )
    _BMCS[path] = peer
    return peer


def up_sites(
    root: Path,
    count: int,
    central: Mapping[str, str],
    say: Say,
    *,
    redis_port: int = REDIS_PORT,
    bmc_base_port: int = 18001,
) -> Layout:
    """Start (or find running) the broker, and per site its BMC and worker."""
    names = site_names(count)
    layout = Layout(redis_port, {site: bmc_base_port + i for i, site in enumerate(names)})
    previous = Layout.load(root)
    if previous is not None and previous != layout and _redis_process(root).is_running():
        raise PeerError(f"the lab runs other sites ({', '.join(previous.sites)}): lab down first")
    layout.save(root)
    password = central[BROKER_PASSWORD_VAR]
    if _redis_process(root).is_running():
        say(f"redis-server already running at {layout.broker}")
    else:
        start_redis(root, layout, password)
        say(f"redis-server (broker, no persistence, password) at {layout.broker}")
    for site, port in layout.sites.items():
        secret = site_secret(root, site)
        write_env(
            root / site / "env",
            {bmc_password_var(site): secret},
            f"Written by `metalform lab up`: the BMC password of site {site}, for its worker only",
        )
        bmc_dir = root / site / "redfish"
        if bmc_dir.exists() and RedfishPeer.attach(bmc_dir).is_running():
            say(f"site {site}: BMC already running")
        else:
            bmc = _bmc(root, site, port, secret).start()
            names_ = ", ".join(s.identity for s in site_systems(site))
            say(f"site {site}: Redfish BMC at {bmc.url}: {names_}")
        if _worker_process(root, site).is_running():
            say(f"site {site}: worker already running")
        else:
            start_worker(root, layout, site, central, secret)
    beating = wait_for_workers(root, layout, password)
    for site in layout.sites:
        state = "serving" if beating[site] else "started, no heartbeat yet"
        say(f"site {site}: metalform worker --site {site} {state} (queue site-{site})")
    inventory = write_inventory(root, layout)
    say(f"Sites inventory: metalform plan -C {inventory} --broker {layout.broker} "
        f"--broker-password-env {BROKER_PASSWORD_VAR}")  # fmt: skip
    return layout


def down_sites(root: Path) -> bool:
    """Stop the workers first (a warm shutdown), then the BMCs and the broker."""
    layout = Layout.load(root)
    if layout is None:
        return False
    for site in layout.sites:
        _worker_process(root, site).stop()
    for site in layout.sites:
        if (root / site / "redfish").exists():
            _bmc(root, site, 0).stop()
            _BMCS.pop((root / site / "redfish").resolve(), None)
    _redis_process(root).stop()
    return True


def status_sites(root: Path, password: str | None, say: Say) -> bool:
    """One line per process; a worker counts as running once its heartbeat is seen."""
    layout = Layout.load(root)
    if layout is None:
        return True
    redis_ok = _redis_process(root).is_running()
    say(f"redis    {'running' if redis_ok else 'stopped'}  {layout.broker}")
    beating = (
        heartbeats(layout, password)
        if redis_ok and password
        else dict.fromkeys(layout.sites, False)
    )
    running = redis_ok
    for site in layout.sites:
        bmc = _bmc(root, site, 0) if (root / site / "redfish").exists() else None
        bmc_ok = bmc is not None and bmc.is_running()
        worker_ok = _worker_process(root, site).is_running()
        running &= bmc_ok and worker_ok
        url = bmc.url if bmc is not None and bmc_ok else ""
        say(f"site     {'running' if bmc_ok else 'stopped'}  {site} BMC {url}".rstrip())
        heart = "heartbeat seen" if beating.get(site) else "no heartbeat"
        say(f"worker   {'running' if worker_ok else 'stopped'}  {site} ({heart})")
    return running
