"""A syslog and webhook receiver for the tests, run inside the sandbox (a container on its
network): syslog over TCP with TLS on 6514 and over UDP on 514, a Slack-like webhook on
8080. What it receives goes to files in /sink, one line each, with the time of receipt.

Python's standard library only: it runs with the sandbox VM image's python3.
"""

import http.server
import json
import socket
import socketserver
import ssl
import threading
import time

OUT = "/sink"
lock = threading.Lock()


def record(name: str, text: str) -> None:
    with lock, open(f"{OUT}/{name}", "a") as out:
        out.write(json.dumps({"at": time.time(), "text": text}) + "\n")


class SyslogTLS(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for raw in self.rfile:
            record("syslog.jsonl", raw.decode("utf-8", "replace").rstrip("\n"))


class SyslogUDP(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        record("syslog-udp.jsonl", self.request[0].decode("utf-8", "replace"))


class Webhook(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        if body.get("attachments"):
            parts = [f"{a.get('title', '')}\n{a.get('text', '')}" for a in body["attachments"]]
            record("alertmanager.jsonl", "\n".join(parts))
        else:
            record("alerts.jsonl", body["text"])
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")


class TLSServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address, handler) -> None:
        super().__init__(address, handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(f"{OUT}/cert.pem", f"{OUT}/key.pem")
        self.socket = context.wrap_socket(self.socket, server_side=True)


class UDPServer(socketserver.ThreadingUDPServer):
    allow_reuse_address = True


class HTTPServer(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET


if __name__ == "__main__":
    servers = [
        TLSServer(("0.0.0.0", 6514), SyslogTLS),
        UDPServer(("0.0.0.0", 514), SyslogUDP),
        HTTPServer(("0.0.0.0", 8080), Webhook),
    ]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    record("ready", "listening")
    while True:
        time.sleep(3600)
