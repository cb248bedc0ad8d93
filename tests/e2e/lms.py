"""A stand-in LMS for the LTI 1.3 acceptance test (tests/e2e/test_6c_lms.py): it plays the
part Canvas (or Moodle) plays for a real course, since no real LMS can run here. It is an LTI
1.3 platform as far as a tool sees one, run in a container on the sandbox's network (HTTPS on
8443, its certificate from the test's throwaway CA), Python's standard library only (it runs
with the sandbox VM image's python3):

- GET /jwks: the platform's public key (JWKS), which the hub fetches to check signatures.
- GET /launch?sub=&roles=&context=&target=&fault=: a course page's link, as the LMS serves it:
  an auto-submitting form POST (cross-site) to the tool's OIDC login initiation,
  TOOL/hub/lti13/oauth_login, with iss, login_hint, target_link_uri, lti_message_hint and
  client_id.
- GET /course?<the same>: a course page that opens the tool inside the page, in an iframe of
  the LMS's own origin, as Canvas's "embed" placement does (the hub's LTI_IFRAME).
- GET /authorize: the platform's OIDC authorization endpoint, where the hub sends the browser
  with its state and nonce: an auto-submitting form POST of a signed id_token (RS256) and the
  state to the tool's redirect_uri (TOOL/hub/lti13/oauth_callback), as LTI 1.3 does it.

``fault`` spoils one launch on purpose: ``signature`` (signed with a key the JWKS does not
publish, under the same kid), ``expired`` (exp and iat in the past), ``audience`` (another
client id). What it signed goes to /lms/launches.jsonl, one line each.

Its configuration: /lms/config.json (tool, issuer, client_id), /lms/keys.json (RSA numbers),
/lms/cert.pem and /lms/key.pem.
"""

import base64
import hashlib
import html
import http.server
import json
import socket
import ssl
import threading
import time
import uuid
from urllib.parse import parse_qs, urlparse

OUT = "/lms"
KID = "stand-in-lms-1"
LIS = "http://purl.imsglobal.org/vocab/lis/v2/membership"
ROLES = {  # short names the test uses -> LTI 1.3 role URIs (LIS vocabulary)
    "Learner": f"{LIS}#Learner",
    "Instructor": f"{LIS}#Instructor",
    "TeachingAssistant": f"{LIS}/Instructor#TeachingAssistant",
}
# DER DigestInfo prefix of SHA-256 (RFC 8017, 9.2): RS256 is PKCS #1 v1.5 over it.
SHA256_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")
lock = threading.Lock()
launches: dict[str, dict] = {}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def int_bytes(number: int) -> bytes:
    return number.to_bytes((number.bit_length() + 7) // 8, "big")


def sign_rs256(message: bytes, key: dict) -> bytes:
    n, d = key["n"], key["d"]
    size = (n.bit_length() + 7) // 8
    digest = SHA256_PREFIX + hashlib.sha256(message).digest()
    encoded = b"\x00\x01" + b"\xff" * (size - len(digest) - 3) + b"\x00" + digest
    return pow(int.from_bytes(encoded, "big"), d, n).to_bytes(size, "big")


def jwt(claims: dict, key: dict) -> str:
    header = {"alg": "RS256", "typ": "JWT", "kid": KID}
    signing_input = ".".join(
        b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    return signing_input + "." + b64url(sign_rs256(signing_input.encode(), key))


def form_post(action: str, fields: dict) -> bytes:
    """A page that POSTs ``fields`` to ``action`` at once, as an LMS's launch pages do."""
    inputs = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in fields.items()
    )
    return (
        "<!doctype html><html><head><title>Stand-in LMS</title></head>"
        '<body onload="document.forms[0].submit()"><p>Stand-in LMS: launching the tool</p>'
        f'<form method="post" action="{html.escape(action)}">{inputs}'
        '<noscript><button type="submit">Continue</button></noscript></form></body></html>'
    ).encode()


class Platform(http.server.BaseHTTPRequestHandler):
    def reply(self, status: int, body: bytes, kind: str = "text/html; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        args = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/jwks":
            key = KEYS["platform"]
            jwk = {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": KID}
            jwk |= {"n": b64url(int_bytes(key["n"])), "e": b64url(int_bytes(key["e"]))}
            self.reply(200, json.dumps({"keys": [jwk]}).encode(), "application/json")
        elif url.path == "/launch":
            self.launch(args)
        elif url.path == "/course":
            src = html.escape("/launch?" + url.query, quote=True)
            page = f'<!doctype html><title>Course</title><iframe id="tool" src="{src}" '
            page += 'width="1200" height="740"></iframe>'
            self.reply(200, page.encode())
        elif url.path == "/authorize":
            self.authorize(args)
        elif url.path == "/health":
            self.reply(200, b"ok", "text/plain")
        else:
            self.reply(404, b"not found", "text/plain")

    def launch(self, args: dict) -> None:
        launch_id = uuid.uuid4().hex
        with lock:
            launches[launch_id] = args
        fields = {
            "iss": CONFIG["issuer"],
            "login_hint": args["sub"],
            "target_link_uri": CONFIG["tool"] + args.get("target", "/hub/"),
            "lti_message_hint": launch_id,
            "client_id": CONFIG["client_id"],
            "lti_deployment_id": "stand-in-deployment",
        }
        self.reply(200, form_post(CONFIG["tool"] + "/hub/lti13/oauth_login", fields))

    def authorize(self, args: dict) -> None:
        with lock:
            launch = launches.pop(args.get("lti_message_hint", ""), None)
        redirect = args.get("redirect_uri", "")
        if (
            launch is None
            or args.get("client_id") != CONFIG["client_id"]
            or not redirect.startswith(CONFIG["tool"] + "/")
            or args.get("login_hint") != launch["sub"]
        ):
            self.reply(400, b"Stand-in LMS: unknown launch or tool", "text/plain")
            return
        fault = launch.get("fault", "")
        now = int(time.time())
        roles = [ROLES[r] for r in launch.get("roles", "Learner").split(",") if r]
        claims = {
            "iss": CONFIG["issuer"],
            "aud": "another-tool" if fault == "audience" else CONFIG["client_id"],
            "sub": launch["sub"],
            "iat": now - 400 if fault == "expired" else now,
            "exp": now - 100 if fault == "expired" else now + 300,
            "nonce": args.get("nonce", ""),
            "name": launch["sub"].title(),
            "email": f"{launch['sub']}@example.edu",
            "https://purl.imsglobal.org/spec/lti/claim/version": "1.3.0",
            "https://purl.imsglobal.org/spec/lti/claim/message_type": "LtiResourceLinkRequest",
            "https://purl.imsglobal.org/spec/lti/claim/deployment_id": "stand-in-deployment",
            "https://purl.imsglobal.org/spec/lti/claim/target_link_uri": CONFIG["tool"]
            + launch.get("target", "/hub/"),
            "https://purl.imsglobal.org/spec/lti/claim/resource_link": {"id": "week1-lab1"},
            "https://purl.imsglobal.org/spec/lti/claim/roles": roles,
            "https://purl.imsglobal.org/spec/lti/claim/context": {
                "id": launch.get("context", ""),
                "label": "E2E101",
                "title": "End-to-end testing 101",
            },
        }
        key = KEYS["rogue" if fault == "signature" else "platform"]
        token = jwt(claims, key)
        with lock, open(f"{OUT}/launches.jsonl", "a") as out:
            out.write(json.dumps({"at": now, "fault": fault, "claims": claims}) + "\n")
        self.reply(200, form_post(redirect, {"id_token": token, "state": args.get("state", "")}))

    def log_message(self, format: str, *args) -> None:
        with lock, open(f"{OUT}/access.log", "a") as out:
            out.write(f"{self.address_string()} {format % args}\n")


class HTTPSServer(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET
    daemon_threads = True

    def __init__(self, address, handler) -> None:
        super().__init__(address, handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(f"{OUT}/cert.pem", f"{OUT}/key.pem")
        self.socket = context.wrap_socket(self.socket, server_side=True)


if __name__ == "__main__":
    with open(f"{OUT}/config.json") as f:
        CONFIG = json.load(f)
    with open(f"{OUT}/keys.json") as f:
        KEYS = json.load(f)
    server = HTTPSServer(("0.0.0.0", 8443), Platform)
    with open(f"{OUT}/ready", "w") as f:
        f.write("listening\n")
    server.serve_forever()
