"""The webhook's TLS context, reloaded in place when the certificate or key file changes."""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

log = logging.getLogger("pilotfish.injector.tls")


def _stamp(path: Path) -> tuple[int, int, int]:
    # stat() follows the ..data symlink that Kubernetes swaps when a Secret changes.
    status = os.stat(path)
    return (status.st_mtime_ns, status.st_size, status.st_ino)


class ReloadingServerTLS:
    """Owns one server SSLContext; `maybe_reload` loads a changed pair into it.

    The context object is never replaced (the listening socket holds it); loading a new
    chain into it affects only handshakes that start afterwards.
    """

    def __init__(self, cert_file: str | Path, key_file: str | Path) -> None:
        self.cert_file = Path(cert_file)
        self.key_file = Path(key_file)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # The floor: TLS 1.2 or newer (the API server speaks both 1.2 and 1.3).
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.set_alpn_protocols(["http/1.1"])
        self._stamps = self._current_stamps()
        self.context.load_cert_chain(self.cert_file, self.key_file)
        self.loaded = True

    def _current_stamps(self) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        return (_stamp(self.cert_file), _stamp(self.key_file))

    def maybe_reload(self) -> bool | None:
        """True when a new pair was loaded, False when a changed pair was bad (the old one
        stays in use), None when nothing changed."""
        try:
            stamps = self._current_stamps()
        except OSError as exc:
            log.warning("cannot stat the TLS files, keeping the current pair: %s", exc)
            return False
        if stamps == self._stamps:
            return None
        # Check the pair in a scratch context first: a half-written Secret update (cert of
        # the new pair, key of the old) must not break the live context.
        scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            scratch.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            log.warning("new TLS pair not usable yet, keeping the current one: %s", exc)
            return False
        self.context.load_cert_chain(self.cert_file, self.key_file)
        self._stamps = stamps
        log.info("reloaded the TLS certificate from %s", self.cert_file)
        return True
