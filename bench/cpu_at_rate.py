"""CPU microseconds per request at a fixed 1000 requests/s, for any proxy command.

    python3 bench/cpu_at_rate.py DIR PORT -- COMMAND...

Starts COMMAND in DIR pinned to CPU 1 (it must listen on PORT and relay to the upstream
it was given), drives it with `h2load --h1 -c10 --rps 100` for 6 s from CPU 0 after a 1 s
warm-up, and prints its user and system CPU per request from /proc. The same method as
the referee's `cpuus/rq` column, usable for things the referee cannot start (A/B builds in
two checkouts, bench/bare_relay.py).
"""

import os
import re
import subprocess
import sys
import time


def main() -> None:
    cwd, port = sys.argv[1], sys.argv[2]
    command = sys.argv[sys.argv.index("--") + 1 :]
    proc = subprocess.Popen(
        ["taskset", "-c", "1", *command],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.5)
        url = f"http://127.0.0.1:{port}/"
        load = ["taskset", "-c", "0", "h2load", "--h1", "-c", "10", "--rps", "100"]
        subprocess.run([*load, "-D", "1", url], capture_output=True, check=True)
        user0, system0 = _cpu(proc.pid)
        out = subprocess.run(
            [*load, "-D", "6", url], capture_output=True, text=True, check=True
        ).stdout
        user1, system1 = _cpu(proc.pid)
    finally:
        proc.terminate()
        proc.wait()
    match = re.search(r"(\d+) succeeded", out)
    done = int(match.group(1)) if match else 0
    if not done:
        sys.exit(f"no request succeeded:\n{out}")
    tick = 1e6 / os.sysconf("SC_CLK_TCK")
    user, system = (user1 - user0) * tick / done, (system1 - system0) * tick / done
    print(f"{os.path.basename(os.path.abspath(cwd))} requests={done} cpu_us={user + system:.0f} "
          f"user_us={user:.0f} sys_us={system:.0f}")


def _cpu(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


if __name__ == "__main__":
    main()
