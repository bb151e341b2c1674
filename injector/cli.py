"""`pilotfish injector serve|certs`: run the webhook, or make its certificates."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from injector import certs
from injector.config import MeshConfigError
from injector.kube import KubeClient, KubeError, in_cluster_config, patch_ca_bundle
from injector.loading import load_injector
from injector.server import WebhookServer
from injector.template import TemplateError
from injector.tls import ReloadingServerTLS

log = logging.getLogger("pilotfish.injector")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pilotfish injector")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the mutating admission webhook over HTTPS")
    serve.add_argument("--tls-cert", required=True, help="PEM certificate (reloaded on change)")
    serve.add_argument("--tls-key", required=True, help="PEM private key (reloaded on change)")
    serve.add_argument("--port", type=int, default=9443)
    serve.add_argument("--address", default="0.0.0.0")
    serve.add_argument("--template", help="sidecar template YAML")
    serve.add_argument("--mesh-config", help="mesh defaults YAML")
    serve.add_argument("--cert-check-interval", type=float, default=2.0,
                       help="seconds between checks of the TLS files")
    serve.add_argument("--webhook-config", help="name of our MutatingWebhookConfiguration: "
                       "patch its caBundle at start (in-cluster)")
    serve.add_argument("--ca-bundle", help="PEM CA file to write into that caBundle")
    serve.add_argument("--log-level", default="info")
    make = commands.add_parser("certs", help="create a CA and a serving certificate")
    make.add_argument("--service", required=True)
    make.add_argument("--namespace", required=True)
    make.add_argument("--out", required=True, help="directory for ca.crt, tls.crt, tls.key")
    make.add_argument("--days", type=int, default=365)
    make.add_argument("--extra-dns", action="append", default=[])
    make.add_argument("--extra-ip", action="append", default=[])
    return parser


def _certs(args: argparse.Namespace) -> int:
    names = certs.service_dns_names(args.service, args.namespace) + args.extra_dns
    try:
        bundle = certs.make_bundle(names, args.extra_ip, days=args.days)
    except ValueError as exc:
        print(f"pilotfish injector certs: {exc}", file=sys.stderr)
        return 2
    paths = certs.write_bundle(bundle, args.out)
    for name, path in paths.items():
        print(f"wrote {name}: {path}")
    return 0


async def _serve(args: argparse.Namespace) -> int:
    try:
        injector = load_injector(args.template, args.mesh_config)
        tls = ReloadingServerTLS(args.tls_cert, args.tls_key)
    except (TemplateError, MeshConfigError) as exc:
        log.error("%s", exc)
        return 1
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        log.error("cannot load the TLS pair %s, %s: %s", args.tls_cert, args.tls_key, exc)
        return 1
    server = WebhookServer(injector, tls)
    # Everything loaded so far lives as long as the process: move it out of the collector's
    # sight, so a full collection never walks it in the middle of a review (tail latency).
    gc.collect()
    gc.freeze()
    if args.webhook_config:
        if not args.ca_bundle:
            log.error("--webhook-config needs --ca-bundle")
            return 2
        try:
            ca_pem = Path(args.ca_bundle).read_bytes()
            client = KubeClient(in_cluster_config())
            # Blocking with backoff, but in a thread: /healthz answers meanwhile.
            server.ready = False
            patching = asyncio.create_task(
                asyncio.to_thread(patch_ca_bundle, client, args.webhook_config, ca_pem))
        except (OSError, KubeError) as exc:
            log.error("cannot patch the caBundle: %s", exc)
            return 1
    else:
        patching = None
    port = await server.start(args.address, args.port)
    log.info("pilotfish injector listening on %s:%d", args.address, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(server.watch_certificates(args.cert_check_interval, stop))
    if patching is not None:
        try:
            await patching
        except KubeError as exc:
            log.error("cannot patch the caBundle of %s: %s", args.webhook_config, exc)
            stop.set()
            await watcher
            await server.close()
            return 1
        server.ready = True
    await stop.wait()
    log.info("stopping")
    await watcher
    await server.close()
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.command == "certs":
        return _certs(args)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    run: Callable[[Coroutine[Any, Any, int]], int] = asyncio.run
    # libuv's loop: less per-request overhead than asyncio's own (a project dependency,
    # absent only on platforms without it).
    with contextlib.suppress(ImportError):
        import uvloop

        run = uvloop.run
    return run(_serve(args))
