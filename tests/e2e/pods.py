"""Pods for tests: a network namespace each, veth links in 198.18.0.0/15, processes inside."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e import netns

REPO = Path(__file__).resolve().parents[2]
PROXY_UID = 1337
_PR_SET_PDEATHSIG = 1
# The guard shell lives in the pod: if the test process dies (even by SIGKILL) the kernel
# sends it SIGTERM and it takes its child down, so no process outlives the run. The
# signal cannot be set on the child itself: it is cleared when setpriv changes the uid.
_GUARD = "\"$@\" & child=$!; trap 'kill -TERM $child 2>/dev/null' TERM INT; wait $child"


def delete_stale_logs() -> None:
    """A run killed outright cannot remove its logs: remove those whose run is gone."""
    for stale in Path(tempfile.gettempdir()).glob("pf-logs-*-*"):
        pid = stale.name.split("-")[2]
        if pid.isdigit() and not netns.alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


@functools.cache
def _log_dir() -> str:
    """One directory for this run's process logs, removed when the run ends."""
    delete_stale_logs()
    directory = tempfile.mkdtemp(prefix=f"pf-logs-{os.getpid()}-")
    atexit.register(shutil.rmtree, directory, True)
    return directory


def _die_with_parent() -> None:
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@functools.cache
def _proxy_user_prefix() -> tuple[str, ...]:
    """setpriv arguments that run a command as UID/GID 1337 with no groups.

    If the interpreter or the checkout is not readable by 1337 (pyenv under /root is
    mode 0700 on the dev machines), the proxy also gets CAP_DAC_READ_SEARCH as an ambient
    capability, so that it can import its code. That changes no network behaviour: the
    owner match the capture rules use looks only at the UID and GID.
    """
    base = ("setpriv", f"--reuid={PROXY_UID}", f"--regid={PROXY_UID}", "--clear-groups")
    # An interpreter that cannot read its own prefix silently falls back to another
    # stdlib and loses its site-packages, so compare the paths, not just "import proxy".
    paths = [path for path in sys.path if path and os.path.isdir(path)]
    probe_script = (
        "import os, sys\n"
        f"assert sys.prefix == {sys.prefix!r}, sys.prefix\n"
        f"for path in {paths!r}: os.listdir(path)\n"
        "import proxy\n"
    )
    probe = subprocess.run(
        [*base, sys.executable, "-c", probe_script],
        cwd=REPO,
        env=_python_env(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    if probe.returncode == 0:
        return base
    return (*base, "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search")


def _python_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST")}
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@dataclass
class Process:
    """A process started in a pod; stop() ends its whole process group."""

    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)


@dataclass
class Pod:
    """A network namespace standing in for a pod, with its addresses on eth0."""

    name: str
    addresses: list[str] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)

    @property
    def ip(self) -> str:
        return self.addresses[0]

    def exec(self, *command: str, check: bool = True) -> str:
        return netns.run("ip", "netns", "exec", self.name, *command, check=check)

    def start(
        self, *command: str, as_proxy: bool = False, env: Mapping[str, str] | None = None
    ) -> Process:
        """Start a long-running command inside the pod (as UID 1337 when as_proxy); `env`
        is added to the test's environment, as a container's env is to its image's."""
        prefix = _proxy_user_prefix() if as_proxy else ()
        log = Path(tempfile.mkstemp(prefix=f"{self.name}-", suffix=".log", dir=_log_dir())[1])
        with log.open("wb") as sink:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", self.name, "sh", "-c", _GUARD, "guard", *prefix, *command],
                cwd=REPO,
                env={**_python_env(), **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        process = Process(popen, log)
        self.processes.append(process)
        return process

    def capture(
        self, *flags: str, as_proxy: bool = False, path_prefix: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `pilotfish iptables FLAGS` in the pod as root, the way the init container does.

        as_proxy runs it as UID 1337 instead; path_prefix puts a directory of stand-in
        tools first on PATH (to make iptables-restore fail on purpose).
        """
        env = _python_env()
        if path_prefix is not None:
            env["PATH"] = f"{path_prefix}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        prefix = _proxy_user_prefix() if as_proxy else ()
        return subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.name,
                *prefix,
                sys.executable,
                "-m",
                "proxy",
                "iptables",
                *flags,
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def run_as_proxy(self, *command: str) -> subprocess.CompletedProcess[str]:
        """Run a short command in the pod as UID/GID 1337, like the sidecar's own sockets."""
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *_proxy_user_prefix(), *command],
            cwd=REPO,
            env=_python_env(),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def nat(self, family: str = "ipv4") -> str:
        """`iptables-save -t nat` without its timestamp comments: comparable across calls."""
        tool = "iptables-save" if family == "ipv4" else "ip6tables-save"
        saved = self.exec(tool, "-t", "nat")
        return "".join(line + "\n" for line in saved.splitlines() if not line.startswith("#"))

    def destroy(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        netns.delete(self.name)


def make_pod() -> Pod:
    return Pod(netns.create())


def link(a: Pod, a_addresses: list[str], b: Pod, b_addresses: list[str]) -> None:
    """A veth pair named eth0 at both ends, made directly inside the two pods.

    The ends never exist in the host's namespace, so names cannot clash with other runs.
    Addresses are "ip/prefix" strings inside 198.18.0.0/15.
    """
    netns.run(
        "ip",
        "link",
        "add",
        "eth0",
        "netns",
        a.name,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        b.name,
    )
    for pod, addresses in ((a, a_addresses), (b, b_addresses)):
        for address in addresses:
            netns.run("ip", "-n", pod.name, "addr", "add", address, "dev", "eth0")
            pod.addresses.append(address.split("/")[0])
        netns.run("ip", "-n", pod.name, "link", "set", "eth0", "up")
