"""A ClickHouse server stand-in for tests: chDB behind ClickHouse's HTTP interface.

No ClickHouse server runs on this machine (no Docker; Debian's package is from 2018), and
chDB is in-process only. This process holds one chDB store and answers the part of the HTTP
interface that clickhouse-connect uses, so several `stocktake worker` processes can share
one store as they share a ClickHouse server (README: Scale-out). It is a stand-in, not a
server: one query at a time, no sessions, no response compression, no
external data. What it does take as ClickHouse does:

- the query from the ``query`` URL parameter followed by the body (a line feed between);
  an INSERT's data is what follows its ``FORMAT <name>``, the body compressed or not
  (``Content-Encoding`` lz4, zstd, gzip, deflate);
- ``param_<name>`` values for ``{name:Type}`` placeholders; every other URL parameter that
  is not the HTTP interface's own is a setting of that query (``insert_deduplication_token``,
  ``readonly``, ...);
- errors as status 500, ``X-ClickHouse-Exception-Code`` and ClickHouse's message.

It binds 127.0.0.1 and answers only requests with its user and password (basic auth or
``X-ClickHouse-User``/``X-ClickHouse-Key``).

    python -m tests.store_server --path DIR --user U --password P [--port N]

prints ``listening on <port>`` once it takes requests.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hmac
import json
import os
import re
import tempfile
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import chdb

# URL parameters of the HTTP interface itself, not settings of the query.
HTTP_PARAMS = {
    "query", "database", "query_id", "session_id", "session_timeout", "session_check", "compress", "decompress",
    "user", "password", "quota_key", "default_format", "client_protocol_version", "buffer_size",
    "wait_end_of_query", "enable_http_compression", "send_progress_in_http_headers",
    "http_headers_progress_interval_ms", "cancel_http_readonly_queries_on_client_close",
    "http_zlib_compression_level",
}
_INSERT = re.compile(rb"^\s*INSERT\s+INTO\s", re.IGNORECASE)
_FORMAT = re.compile(rb"\sFORMAT\s+([A-Za-z0-9_]+)", re.IGNORECASE)
_TRAILING_FORMAT = re.compile(r"\s+FORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CODE = re.compile(r"Code: (\d+)")


class QueryError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def _decompress(data: bytes, encoding: str) -> bytes:
    if encoding in ("", "identity"):
        return data
    if encoding == "lz4":
        import lz4.frame
        return bytes(lz4.frame.decompress(data))
    if encoding == "zstd":
        import zstandard
        return bytes(zstandard.ZstdDecompressor().decompressobj().decompress(data))
    if encoding == "gzip":
        return gzip.decompress(data)
    if encoding == "deflate":
        return zlib.decompress(data)
    raise QueryError(1, f"Content-Encoding {encoding!r} is not supported by the stand-in")


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def settings_clause(settings: dict[str, str]) -> str:
    """`` SETTINGS a = 'x', ...``; readonly last, as ClickHouse applies URL settings in order
    and no setting may change once readonly applies."""
    names = sorted(settings, key=lambda name: name == "readonly")
    for name in names:
        if not _SETTING_NAME.match(name):
            raise QueryError(115, f"Unknown setting {name!r}")
    return (" SETTINGS " + ", ".join(f"{name} = {_quote(settings[name])}" for name in names)) if names else ""


class StandIn:
    """One chDB store; queries run one at a time (chDB takes one call at a time)."""

    def __init__(self, path: str):
        self.connection = chdb.connect(path)
        self.lock = threading.Lock()
        self.spool = tempfile.mkdtemp(prefix="store-server-")

    def run(self, text: bytes, params: dict[str, str], settings: dict[str, str]) -> tuple[bytes, str]:
        """(result bytes, format) of one request's query, data included for an INSERT."""
        if _INSERT.match(text) and (found := _FORMAT.search(text)):
            return self._insert(text[:found.start()].decode(), found.group(1).decode(), text[found.end():], settings,
                                params)
        sql = text.decode().strip().rstrip(";")
        trailing = _TRAILING_FORMAT.search(sql)
        fmt = trailing.group(1) if trailing else "TabSeparated"
        body = sql[:trailing.start()] if trailing else sql
        first = body.lstrip().split(None, 1)[0].upper() if body.strip() else ""
        if first in ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN") and settings:
            body += settings_clause(settings)
        return self._query(body, fmt, params), fmt

    def _insert(self, head: str, fmt: str, data: bytes, settings: dict[str, str], params: dict[str, str]
                ) -> tuple[bytes, str]:
        if data[:1] == b"\n":
            data = data[1:]
        elif data[:2] == b"\r\n":
            data = data[2:]
        if not data.strip():
            raise QueryError(108, "No data to insert")
        fd, path = tempfile.mkstemp(dir=self.spool)
        try:
            with os.fdopen(fd, "wb") as spooled:
                spooled.write(data)
            sql = f"{head} FROM INFILE {_quote(path)}{settings_clause(settings)} FORMAT {fmt}"
            return self._query(sql, "TabSeparated", params), fmt
        finally:
            os.unlink(path)

    def _query(self, sql: str, fmt: str, params: dict[str, str]) -> bytes:
        with self.lock:
            try:
                result = self.connection.query(sql, fmt, params=params)
            except Exception as exc:   # chDB raises its ClickHouse error text
                message = str(exc)
                code = _CODE.search(message)
                raise QueryError(int(code.group(1)) if code else 1000, message) from None
        return bytes(result.bytes()) if result is not None else b""


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:   # quiet: the test reads its own log
        pass

    def _authorized(self) -> bool:
        user, key = self.headers.get("X-ClickHouse-User"), self.headers.get("X-ClickHouse-Key")
        auth = self.headers.get("Authorization", "")
        if user is None and auth.startswith("Basic "):
            user, _, key = base64.b64decode(auth[6:]).decode().partition(":")
        return (user is not None and hmac.compare_digest(user, self.server.user)
                and hmac.compare_digest(key or "", self.server.password))

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/ping":
            self._answer(200, b"Ok.\n", {})
            return
        body = self._body()
        if not self._authorized():
            self._answer(401, b"Code: 516. DB::Exception: stand-in: wrong user or password. (AUTHENTICATION_FAILED)\n",
                         {"X-ClickHouse-Exception-Code": "516"})
            return
        args = dict(parse_qsl(url.query, keep_blank_values=True))
        params = {name[6:]: value for name, value in args.items() if name.startswith("param_")}
        settings = {name: value for name, value in args.items()
                    if name not in HTTP_PARAMS and not name.startswith("param_")}
        try:
            data = _decompress(body, self.headers.get("Content-Encoding", "").strip().lower())
            query = args.get("query", "").encode()
            text = query + b"\n" + data if query and data else query or data
            result, fmt = self.server.stand_in.run(text, params, settings)
        except QueryError as exc:
            self._answer(500, f"Code: {exc.code}. DB::Exception: {exc}\n".encode(),
                         {"X-ClickHouse-Exception-Code": str(exc.code), "Content-Type": "text/plain; charset=UTF-8"})
            return
        self._answer(200, result, {
            "X-ClickHouse-Format": fmt, "X-ClickHouse-Timezone": "UTC",
            "X-ClickHouse-Query-Id": args.get("query_id", ""),
            "X-ClickHouse-Summary": json.dumps({"read_rows": "0", "written_rows": "0"}),
            "Content-Type": "application/octet-stream"})

    do_GET = do_POST = _handle


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, stand_in: StandIn, user: str, password: str):
        super().__init__(("127.0.0.1", port), Handler)
        self.stand_in, self.user, self.password = stand_in, user, password


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--path", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    args = parser.parse_args()
    server = Server(args.port, StandIn(args.path), args.user, args.password)
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
