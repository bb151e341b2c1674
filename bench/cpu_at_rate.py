"""CPU microseconds per request at a fixed 1000 requests/s, for any proxy command.

    python3 bench/cpu_at_rate.py DIR PORT -- COMMAND...
    python3 bench/cpu_at_rate.py --windows 12 DIR PORT -- COMMAND...
    python3 bench/cpu_at_rate.py --load 1:1000 DIR PORT -- COMMAND...

Starts COMMAND in DIR pinned to CPU 1 (it must listen on PORT and relay to the upstream
it was given), drives it with `h2load --h1 -c10 --rps 100` for 6 s from CPU 0 after a 1 s
warm-up, and prints its user and system CPU per request from /proc. The same method as
the referee's `cpuus/rq` column, usable for things the referee cannot start (A/B builds in
two checkouts, bench/bare_relay.py). It also prints how many times per request the process
went to sleep and was woken again (its voluntary context switches).

The referee's ten connections at 100 requests/s each send in bursts (their timers run in
step), so one wake-up serves several requests. `--load C:R` sets the connections and the
rate on each: `--load 1:1000` sends every request alone, `--load 100:10` in bursts of up
to a hundred.

With `--windows N` the load runs on for N windows of 3 s, and each prints the CPU per
request (the scheduler's own run time, summed over the process's threads) beside the
times per request the process went to sleep and was woken again (its voluntary context
switches). On these VMs the two move together from window to window, for Envoy as for
pilotfish (docs/benchmarks.md, "Why CPU per request at 1000/s swings").
"""

import argparse
import os
import re
import subprocess
import time

LOAD = ["taskset", "-c", "0", "h2load", "--h1"]
WINDOW_SECS = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=0, help="per-window figures instead")
    parser.add_argument("--load", default="10:100", help="CONNECTIONS:RATE_EACH (10:100)")
    parser.add_argument("dir")
    parser.add_argument("port")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND...")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    connections, rate = args.load.split(":")
    load = [*LOAD, "-c", connections, "--rps", rate]
    proc = subprocess.Popen(
        ["taskset", "-c", "1", *command],
        cwd=args.dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{args.port}/"
    try:
        time.sleep(1.5)
        subprocess.run([*load, "-D", "1", url], capture_output=True, check=True)
        if args.windows:
            _windows(proc.pid, load, int(connections) * int(rate), url, args.windows)
        else:
            _once(proc.pid, load, url, os.path.basename(os.path.abspath(args.dir)))
    finally:
        proc.terminate()
        proc.wait()


def _once(pid: int, load: list[str], url: str, name: str) -> None:
    user0, system0 = _cpu(pid)
    sleeps0 = _run_and_sleeps(pid)[1]
    out = subprocess.run([*load, "-D", "6", url], capture_output=True, text=True, check=True).stdout
    user1, system1 = _cpu(pid)
    sleeps1 = _run_and_sleeps(pid)[1]
    match = re.search(r"(\d+) succeeded", out)
    done = int(match.group(1)) if match else 0
    if not done:
        raise SystemExit(f"no request succeeded:\n{out}")
    tick = 1e6 / os.sysconf("SC_CLK_TCK")
    user, system = (user1 - user0) * tick / done, (system1 - system0) * tick / done
    print(
        f"{name} requests={done} cpu_us={user + system:.0f} user_us={user:.0f} "
        f"sys_us={system:.0f} sleeps_per_request={(sleeps1 - sleeps0) / done:.2f}"
    )


def _windows(pid: int, load: list[str], per_second: int, url: str, windows: int) -> None:
    running = subprocess.Popen(
        [*load, "-D", str(windows * WINDOW_SECS + 2), url], stdout=subprocess.DEVNULL
    )
    try:
        time.sleep(1)
        for window in range(windows):
            ran0, sleeps0 = _run_and_sleeps(pid)
            start = time.monotonic()
            time.sleep(WINDOW_SECS)
            ran1, sleeps1 = _run_and_sleeps(pid)
            requests = per_second * (time.monotonic() - start)  # the load's fixed rate
            print(
                f"window {window:2} cpu_us={(ran1 - ran0) / 1000 / requests:6.1f} "
                f"sleeps_per_request={(sleeps1 - sleeps0) / requests:.3f}",
                flush=True,
            )
    finally:
        running.kill()
        running.wait()


def _cpu(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def _run_and_sleeps(pid: int) -> tuple[int, int]:
    """Nanoseconds on a CPU and voluntary context switches, over all the threads."""
    ran = sleeps = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat") as schedstat:
            ran += int(schedstat.read().split()[0])
        with open(f"/proc/{pid}/task/{task}/status") as status:
            for line in status:
                if line.startswith("voluntary_ctxt_switches"):
                    sleeps += int(line.split()[1])
    return ran, sleeps


if __name__ == "__main__":
    main()
