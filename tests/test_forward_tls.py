"""Forwarding over TLS (grpcs://, https:// with a private CA) and with gzip, to real
servers on 127.0.0.1 that hold the self-signed certificate in tests/data/tls."""

from __future__ import annotations

import gzip
import http.server
import ssl
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import grpc
import httpx
import pytest

from spanhouse.collector.forward import Destination, Sender, Transport
from spanhouse.collector.metrics import Metrics
from spanhouse.errors import ConfigError

TLS = Path(__file__).parent / "data" / "tls"
CERT, KEY = TLS / "cert.pem", TLS / "key.pem"
SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


@contextmanager
def _grpc_destination(*, tls: bool, options: tuple[tuple[str, int], ...] = ()) -> Iterator[tuple[int, list[bytes]]]:
    """A gRPC OTLP endpoint recording the request bodies it takes."""
    got: list[bytes] = []

    def export(body: bytes, context: grpc.ServicerContext) -> bytes:
        got.append(body)
        return b""

    server = grpc.server(futures.ThreadPoolExecutor(2), options=options)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(export)}),))
    if tls:
        credentials = grpc.ssl_server_credentials([(KEY.read_bytes(), CERT.read_bytes())])
        port = server.add_secure_port("127.0.0.1:0", credentials)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, got
    finally:
        server.stop(0)


class _Recording(http.server.BaseHTTPRequestHandler):
    got: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers["content-length"]))
        self.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _http_destination(*, tls: bool) -> Iterator[str]:
    """An OTLP/HTTP endpoint recording headers and bodies; its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recording)
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(CERT, KEY)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Recording.got = []
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}/v1/traces"
    finally:
        server.shutdown()


def _send(url: str, transport: Transport, payload: bytes = b"\x0a\x00") -> Sender:
    sender = Sender(replace(Destination.parse(url), transport=transport), Metrics())
    try:
        sender.send(payload, "t")
    finally:
        sender.close()
    return sender


def test_a_grpcs_destination_is_sent_over_tls_checked_against_the_ca_file() -> None:
    """Forwarding over gRPC was plaintext only: no OTLP backend that needs TLS (every
    hosted one) could take it over gRPC."""
    trusted = Transport.load("none", CERT)
    with _grpc_destination(tls=True) as (port, got):
        ok = _send(f"grpcs://127.0.0.1:{port}", trusted, b"\x0a\x00")
        assert (ok.failure, ok.refused, got) == ("", False, [b"\x0a\x00"])
        unknown_ca = _send(f"grpcs://127.0.0.1:{port}", Transport())  # the public roots only
        plaintext = _send(f"grpc://127.0.0.1:{port}", trusted)
    assert unknown_ca.failure == "UNAVAILABLE" and plaintext.failure == "UNAVAILABLE"  # retried, not dropped
    assert got == [b"\x0a\x00"]


def test_an_https_destination_trusts_the_ca_file_besides_the_public_roots(monkeypatch: pytest.MonkeyPatch) -> None:
    with _http_destination(tls=True) as url:
        assert _send(url, Transport.load("none", CERT)).failure == ""
        refused = _send(url, Transport())
        # without a CA file httpx chooses, and takes SSL_CERT_FILE (a container's usual
        # way to trust a private CA) as before the file existed: a fixed context ignored it
        monkeypatch.setenv("SSL_CERT_FILE", str(CERT))
        assert _send(url, Transport()).failure == ""
    assert "CERTIFICATE_VERIFY_FAILED" in refused.failure
    assert len(_Recording.got) == 2
    for variable in ("SSL_CERT_FILE", "SSL_CERT_DIR"):  # certifi's roots then (a directory loads lazily)
        monkeypatch.delenv(variable, raising=False)
    # the public roots stay trusted with a CA file: its context holds both
    with_file = Transport.load("none", CERT).verify()
    assert isinstance(with_file, ssl.SSLContext) and Transport().verify() is True
    assert len(with_file.get_ca_certs()) == len(httpx.create_ssl_context().get_ca_certs()) + 1 > 100


def test_a_ca_bundle_with_comments_in_utf8_is_taken(tmp_path: Path) -> None:
    """Bundles label each certificate with its issuer, in UTF-8 where the name needs it
    (p11-kit's, distributions'): the file was decoded as ASCII and refused. It is read
    once, at start: a file replaced or removed later changes nothing."""
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes("# Főtanúsítvány: the test CA\n".encode() + CERT.read_bytes())
    transport = Transport.load("none", bundle)
    bundle.unlink()
    with _grpc_destination(tls=True) as (port, got):
        assert _send(f"grpcs://127.0.0.1:{port}", transport).failure == ""
    with _http_destination(tls=True) as url:
        assert _send(url, transport).failure == ""
    assert len(got) == 1 and len(_Recording.got) == 1


def test_gzip_compresses_what_is_forwarded_over_both_transports() -> None:
    payload = b"\x0a\x00" * 5000
    with _http_destination(tls=False) as url:
        _send(url, Transport.load("gzip", None), payload)
        _send(url, Transport.load("none", None), payload)
    (zipped_headers, zipped), (plain_headers, plain) = _Recording.got
    assert zipped_headers["content-encoding"] == "gzip" and gzip.decompress(zipped) == payload
    assert len(zipped) < len(payload) // 10
    assert "content-encoding" not in plain_headers and plain == payload
    # a server taking no compressed messages refuses a gzip call: the channel compresses
    identity_only = (("grpc.compression_enabled_algorithms_bitset", 1),)
    with _grpc_destination(tls=False, options=identity_only) as (port, got):
        assert _send(f"grpc://127.0.0.1:{port}", Transport.load("none", None), payload).failure == ""
        assert _send(f"grpc://127.0.0.1:{port}", Transport.load("gzip", None), payload).refused
    assert got == [payload]


def test_a_bad_compression_or_ca_file_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--forward-compression 'zstd'"):
        Transport.load("zstd", None)
    with pytest.raises(ConfigError, match="--forward-ca-file .*missing.pem"):
        Transport.load("none", tmp_path / "missing.pem")
    (tmp_path / "key-only.pem").write_bytes(KEY.read_bytes())  # a key, not a certificate
    with pytest.raises(ConfigError, match="OpenSSL cannot read it as PEM CA certificates"):
        Transport.load("none", tmp_path / "key-only.pem")
    # a damaged block beside a good one: refused at start, not at every send (the block
    # left out could be the CA needed)
    good = CERT.read_bytes().splitlines(keepends=True)
    (tmp_path / "cut.pem").write_bytes(b"".join(good[:len(good) // 2] + good))  # a block without its end
    with pytest.raises(ConfigError, match="cut.pem"):
        Transport.load("none", tmp_path / "cut.pem")


def test_a_trust_bundle_of_trusted_certificate_blocks_is_taken() -> None:
    """OpenSSL's trust format (``x509 -trustout``; Fedora's ca-bundle.trust.crt), which
    OpenSSL and gRPC read, was refused when only CERTIFICATE blocks were looked for."""
    transport = Transport.load("none", TLS / "trusted.pem")
    with _grpc_destination(tls=True) as (port, got):
        assert _send(f"grpcs://127.0.0.1:{port}", transport).failure == ""
    with _http_destination(tls=True) as url:
        assert _send(url, transport).failure == ""
    assert len(got) == 1 and len(_Recording.got) == 1
