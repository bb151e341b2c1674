"""The `pilotfish` command: dispatches to the proxy, the capture init command and the injector.

Each subcommand's module is imported only when it is chosen, so `pilotfish iptables`
(the init container) never pays for the data plane's imports and vice versa.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> ("module[:function]", one-line help); the function (default `main`)
# takes the remaining arguments and returns the exit code.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("proxy.runtime.main", "run the sidecar proxy (--sidecar, or --listen/--upstream)"),
    "demo": ("proxy.demo.main", "run a demo app behind the sidecar, drive traffic, summarise"),
    "iptables": ("proxy.capture.cli", "install the transparent-capture rules (init container)"),
    "injector": ("injector.cli", "the admission webhook: `injector serve`, `injector certs`"),
    "inject": ("injector.offline", "offline injection: `inject -f FILE|-` to stdout"),
    "wait": ("proxy.admin.hooks:wait", "wait until the proxy is ready (postStart hook)"),
    "drain": ("proxy.admin.hooks:drain", "start draining the proxy (preStop hook)"),
}


def usage() -> str:
    lines = ["usage: pilotfish <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0
    if args[0] == "--version":
        from proxy import __version__

        print(f"pilotfish {__version__}")
        return 0
    entry = SUBCOMMANDS.get(args[0])
    if entry is None:
        print(f"pilotfish: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, _, function = entry[0].partition(":")
    module = importlib.import_module(module_name)
    result: int = getattr(module, function or "main")(args[1:])
    return result


if __name__ == "__main__":
    raise SystemExit(main())
