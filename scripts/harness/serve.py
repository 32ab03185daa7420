#!/usr/bin/env python3
"""Test servers for Flare's integration tests, one per process.

    serve.py moto     --port N [--iam]
    serve.py smtp     --port N --tls-port M --dir DIR --user U --password P
    serve.py gateway  --port N

Each prints "READY <json>" on stdout once it accepts connections, then serves until
its standard input closes (the test binary that started it exited) or it is killed
by pid. That way a crashed test run never leaves a server behind.
"""
import argparse
import datetime
import json
import os
import sys
import threading
import time


def wait_for_stdin_eof():
    try:
        while sys.stdin.buffer.read(1024):
            pass
    except Exception:
        pass


def ready(**info):
    sys.stdout.write("READY " + json.dumps(info) + "\n")
    sys.stdout.flush()


def serve_http(handler, port):
    """Serves `handler` on 127.0.0.1:port until stdin closes."""
    from http.server import ThreadingHTTPServer

    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ready(url=f"http://127.0.0.1:{port}")
    wait_for_stdin_eof()
    server.shutdown()


# --------------------------------------------------------------------------- moto
def _atomic_dynamodb_writes():
    """DynamoDB checks a write's condition and writes as one step; moto's server runs
    requests on threads and its backend takes no lock, so two conditional puts on the
    same revision could both pass (a concurrency test lost 1 of 40 device
    registrations that way). Each write runs under one lock here, as it would in AWS."""
    import functools
    import threading

    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()

    def locked(method):
        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            with lock:
                return method(*args, **kwargs)

        return wrapper

    for name in ("put_item", "update_item", "delete_item", "transact_write_items"):
        setattr(DynamoDBBackend, name, locked(getattr(DynamoDBBackend, name)))


def _faster_moto():
    """Three of moto's costs that profiling the tests' moto servers (py-spy, the pipeline
    tests) found, taken out without changing an answer:
    - every request lists moto's package directory (about 150 stat calls) to match the
      host against backend names, under the one lock all requests take: listed once;
    - a queue's message counts compute "now" twice per message through datetime (an
      import, two datetime objects): an SQS send reads every attribute of its queue, so
      a bulk send was quadratic in datetime calls; `time.time()` gives the same
      milliseconds since the epoch;
    - `/moto-api/data.json` walks every model of every service, reading each property
      of each instance twice (a queue's counts again); `?service=sns&model=SMS` (either
      or both) walks only those, which is what the harness asks for sent SMS and email.
    """
    from urllib.parse import parse_qs, urlparse

    import moto.backends
    from moto.moto_api._internal.responses import MotoAPIResponse
    from moto.sqs.models import Message

    modules = tuple(moto.backends.list_of_moto_modules())
    moto.backends.list_of_moto_modules = lambda: modules

    Message.visible = property(lambda self: time.time() * 1000.0 > self.visible_at)
    Message.delayed = property(lambda self: time.time() * 1000.0 < self.delayed_until)

    def model_data(self, request, full_url, headers):
        from moto.core.model_instances import model_data

        query = parse_qs(urlparse(full_url).query)
        services, names = query.get("service"), query.get("model")
        results = {}
        for service in sorted(model_data):
            if services and service not in services:
                continue
            models = model_data[service]
            results[service] = {}
            for name in sorted(models):
                if names and name not in names:
                    continue
                results[service][name] = []
                for instance in models[name].instances_tracked:
                    fields = {}
                    for attr in dir(instance):
                        if attr.startswith("_"):
                            continue
                        try:
                            value = getattr(instance, attr)
                            json.dumps(value)
                        except (TypeError, AttributeError, ValueError):
                            continue
                        fields[attr] = value
                    results[service][name].append(fields)
        return 200, {"Content-Type": "application/javascript"}, json.dumps(results)

    MotoAPIResponse.model_data = model_data
    # moto's URL table holds the method bound at its import: bound again here.
    from moto.moto_api._internal import urls as api_urls

    api_urls.url_paths["{0}/moto-api/data.json"] = api_urls.response_instance.model_data


# --iam: the requests that create the admin user before access control starts.
_ADMIN_SETUP_REQUESTS = 3


def _iam_admin(url):
    """Creates the IAM user `flare-test-admin` (Allow */*) and its access key with the
    requests moto leaves unchecked, then proves the next request is checked."""
    import boto3
    import botocore.exceptions

    def client(service):
        return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    iam = client("iam")
    iam.create_user(UserName="flare-test-admin")
    iam.put_user_policy(UserName="flare-test-admin", PolicyName="admin", PolicyDocument=json.dumps(
        {"Version": "2012-10-17",
         "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="flare-test-admin")["AccessKey"]
    try:
        client("sts").get_caller_identity()
        sys.exit("moto --iam: a request with unknown credentials was not refused")
    except botocore.exceptions.ClientError:
        pass
    return {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]}


def run_moto(args):
    import logging

    if args.iam:
        # moto reads this once, when it is imported: the first N requests skip access
        # control (the admin user's creation below), every later one is checked.
        os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = str(_ADMIN_SETUP_REQUESTS)
    from moto.server import ThreadedMotoServer

    _atomic_dynamodb_writes()
    _faster_moto()
    if args.iam:
        import moto_iam  # beside this file

        moto_iam.check_resources()
    # One log line per request is noise here (and a burden on whoever reads stderr).
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    if args.tls:
        # HTTPS with a CA of its own, for the tests of the SDK's TLS client (the other
        # tests use plain HTTP, which moto serves faster).
        certs = make_certs(args.dir)
        server = _tls_moto(certs)(ip_address="127.0.0.1", port=args.port, verbose=False)
        url = f"https://localhost:{args.port}"
    else:
        certs = {}
        # --host 0.0.0.0 (scripts/local-aws): containers reach it on the host's address.
        server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
        url = f"http://127.0.0.1:{args.port}"
    server.start()
    extra = _iam_admin(url) if args.iam else {}
    if certs:
        extra["ca"] = certs["ca"]
    ready(url=url, **extra)
    wait_for_stdin_eof()
    server.stop()


def _tls_moto(certs):
    """ThreadedMotoServer serving HTTPS with the given leaf certificate."""
    import ssl
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication, MotoRequestHandler, create_backend_app)
    from werkzeug.serving import make_server

    class TlsMotoServer(ThreadedMotoServer):
        def _server_entry(self):
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certs["cert"], certs["key"])
            app = DomainDispatcherApplication(create_backend_app)
            self._server = make_server(self._ip_address, self._port, app, True,
                                       request_handler=MotoRequestHandler,
                                       ssl_context=context)
            self._server_ready_event.set()
            self._server.serve_forever()

    return TlsMotoServer


# --------------------------------------------------------------------------- smtp
def make_certs(directory):
    """A CA and a leaf signed by it: rustls refuses a self-signed leaf (CaUsedAsEndEntity)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Flare test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]),
            critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = {k: os.path.join(directory, k + ".pem") for k in ("ca", "cert", "key")}
    with open(paths["ca"], "wb") as f:
        f.write(ca.public_bytes(pem))
    with open(paths["cert"], "wb") as f:
        f.write(leaf.public_bytes(pem))
    with open(paths["key"], "wb") as f:
        f.write(leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return paths


def _count(mail_dir, counter):
    """What the fault injection did so far, for the tests: counts.json beside the mail."""
    tmp = os.path.join(mail_dir, "..", ".counts.tmp")
    with open(tmp, "w") as f:
        json.dump({"refused": counter["refused"], "hung": counter["hung"]}, f)
    os.replace(tmp, os.path.join(mail_dir, "..", "counts.json"))


def run_smtp(args):
    import ssl
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    mail_dir = os.path.join(args.dir, "mail")
    os.makedirs(mail_dir, exist_ok=True)
    certs = make_certs(args.dir)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certs["cert"], certs["key"])
    counter = {"n": 0, "refused": 0, "hung": 0}
    lock = threading.Lock()
    import asyncio
    import random
    chaos = random.Random(args.seed)

    class Sink:
        async def handle_DATA(self, server, session, envelope):
            # Fault injection (--fail-rate, --hang-rate): a temporary refusal (SMTP's
            # 5xx are permanent rejections, so a server error is a 4xx here), or a
            # server that stops answering past the client's timeout and then drops
            # the message. Neither keeps the message.
            with lock:
                r = chaos.random()
            if r < args.hang_rate:
                with lock:
                    counter["hung"] += 1
                _count(mail_dir, counter)
                await asyncio.sleep(args.hang)
                return "421 4.4.2 Injected hang: timed out"
            if r < args.hang_rate + args.fail_rate:
                with lock:
                    counter["refused"] += 1
                _count(mail_dir, counter)
                return "451 4.3.0 Injected temporary failure"
            with lock:
                counter["n"] += 1
                n = counter["n"]
            record = {
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "data": envelope.content.decode("utf-8", "replace"),
                "auth_user": getattr(session, "auth_data", None) and
                session.auth_data.login.decode(),
                "tls": session.ssl is not None or server.transport.get_extra_info("sslcontext") is not None,
                # The client's address and port: which connection carried the message.
                "peer": "%s:%s" % tuple(session.peer[:2]),
            }
            tmp = os.path.join(mail_dir, f".{n:08d}.json")
            with open(tmp, "w") as f:
                json.dump(record, f)
            os.rename(tmp, os.path.join(mail_dir, f"{n:08d}.json"))
            return "250 OK queued as flare-test-%d" % n

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword)
              and auth_data.login.decode() == args.user
              and auth_data.password.decode() == args.password)
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    common = dict(hostname="127.0.0.1", authenticator=authenticator,
                  auth_require_tls=True, auth_required=False)
    # Plain port: STARTTLS offered (not forced, so plaintext tests can run too).
    starttls = Controller(Sink(), port=args.port, tls_context=tls, require_starttls=False,
                          **common)
    # Implicit TLS port (smtps / 465 style). aiosmtpd counts only STARTTLS as TLS for
    # auth_require_tls, so here AUTH is offered outright: the whole session is TLS.
    implicit_opts = dict(common, auth_require_tls=False)
    implicit = Controller(Sink(), port=args.tls_port, ssl_context=tls, **implicit_opts)
    starttls.start()
    implicit.start()
    ready(host="127.0.0.1", port=args.port, tls_port=args.tls_port, ca=certs["ca"],
          mail_dir=mail_dir)
    wait_for_stdin_eof()
    starttls.stop()
    implicit.stop()


# ------------------------------------------------------------------------ gateway
def run_gateway(args):
    """An HTTP SMS gateway: records every request; answers from a per-path script.

    POST /_script {"path": "/send", "responses": [{"status": 500}, {"status": 200,
    "body": {...}}, {"hang": 5}, {"status": 302, "location": "..."},
    {"status": 429, "headers": {"Retry-After": "1"}}]} queues answers for a
    path; with no script a path answers 200 {"id": "gw-<n>"}. GET /_requests lists what
    was received (method, path, headers, body)."""
    from http.server import BaseHTTPRequestHandler

    import random

    lock = threading.Lock()
    received = []
    scripts = {}
    chaos = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _reply(self, status, body=b"", ctype="application/json", extra=None):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def do_GET(self):
            if self.path == "/_requests":
                with lock:
                    data = json.dumps(received).encode()
                return self._reply(200, data)
            return self._handle(b"")

        def do_POST(self):
            body = self._body()
            if self.path == "/_script":
                spec = json.loads(body)
                with lock:
                    scripts.setdefault(spec["path"], []).extend(spec["responses"])
                return self._reply(204)
            if self.path == "/_chaos":
                # {"path", "error_rate", "hang_rate", "hang", "seed"}: unscripted
                # requests to `path` answer 500/503 or hang (then 504) at these rates.
                spec = json.loads(body)
                with lock:
                    chaos[spec["path"]] = dict(spec, rng=random.Random(spec.get("seed", 1)))
                return self._reply(204)
            return self._handle(body)

        def _handle(self, body):
            with lock:
                received.append({
                    # When it arrived (seconds since the epoch): the pacing tests count
                    # requests per second at the gateway.
                    "at": time.time(),
                    "method": self.command,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body.decode("utf-8", "replace"),
                })
                entry = received[-1]
                n = len(received)
                path = self.path.split("?")[0]
                queue = scripts.get(path) or []
                step = queue.pop(0) if queue else None
                if step is None and path in chaos:
                    c = chaos[path]
                    r = c["rng"].random()
                    if r < c.get("hang_rate", 0):
                        step = {"hang": c.get("hang", 15), "status": 504}
                    elif r < c.get("hang_rate", 0) + c.get("error_rate", 0):
                        step = {"status": 500 if r * 1000 % 2 < 1 else 503}
                # What the gateway did: its status, or "hang" (the client had gone).
                entry["status"] = "hang" if step and "hang" in step else (
                    step.get("status", 200) if step else 200)
            if step is None:
                return self._reply(200, json.dumps({"id": f"gw-{n}"}).encode())
            if "hang" in step:
                time.sleep(step["hang"])
                if "status" in step:
                    try:
                        return self._reply(step["status"], b"{}")
                    except OSError:
                        return  # the client gave up long ago
            status = step.get("status", 200)
            extra = {"Location": step["location"]} if "location" in step else None
            if "headers" in step:
                extra = dict(extra or {}, **step["headers"])
            payload = step.get("body", {})
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            return self._reply(status, data, extra=extra)

    serve_http(Handler, args.port)


# ------------------------------------------------------------------------ sqs-sink
def run_sqs_sink(args):
    """Accepts SQS SendMessageBatch and SendMessage (JSON protocol) and keeps nothing: for counting a
    fan-out's calls at a size where moto's queues (slower with every message held)
    cannot keep up. Answers every entry as sent, with the body's MD5 as SQS does."""
    import hashlib
    import uuid
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            req = json.loads(self.rfile.read(n) or b"{}")
            target = self.headers.get("X-Amz-Target", "")
            if target.endswith("SendMessageBatch"):
                out = {"Successful": [
                    {"Id": e["Id"], "MessageId": str(uuid.uuid4()),
                     "MD5OfMessageBody": hashlib.md5(e["MessageBody"].encode()).hexdigest()}
                    for e in req.get("Entries", [])], "Failed": []}
                status = 200
            elif target.endswith("SendMessage"):
                # The router's check of its next route page (above 1,000 users).
                out = {"MessageId": str(uuid.uuid4()),
                       "MD5OfMessageBody": hashlib.md5(req.get("MessageBody", "").encode()).hexdigest()}
                status = 200
            else:
                out = {"__type": "com.amazonaws.sqs#UnsupportedOperation", "message": target}
                status = 400
            data = json.dumps(out).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.0")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    serve_http(Handler, args.port)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["moto", "smtp", "gateway", "sqs-sink"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1", help="moto: the address to listen on")
    p.add_argument("--tls-port", type=int)
    p.add_argument("--dir")
    p.add_argument("--user", default="flare")
    p.add_argument("--password", default="flare-test-password")
    p.add_argument("--fail-rate", type=float, default=0.0)
    p.add_argument("--hang-rate", type=float, default=0.0)
    p.add_argument("--hang", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=1)
    # moto: IAM access control on; READY adds the admin's access_key_id, secret_access_key.
    p.add_argument("--iam", action="store_true")
    p.add_argument("--tls", action="store_true")
    args = p.parse_args()
    {"moto": run_moto, "smtp": run_smtp, "gateway": run_gateway,
     "sqs-sink": run_sqs_sink}[args.kind](args)


if __name__ == "__main__":
    main()
