#!/usr/bin/python3
"""A real SMTP peer for ringmail's TLS/AUTH tests: aiosmtpd (Debian python3-aiosmtpd)
on 127.0.0.1, plaintext, STARTTLS or implicit TLS, with optional AUTH PLAIN/LOGIN.

Run it with /usr/bin/python3: the interpreter first on PATH may not have aiosmtpd.
Started and stopped by tests/support/aiosmtpd_server.cc. It binds port 0 (or --port),
then writes the port to --ready-file (atomically, by rename). Every accepted message and
every AUTH attempt is appended, one JSON object per line and flushed, to --events.

Quirks of aiosmtpd 1.4.3 (Debian 12) handled here:
- It does not advertise PIPELINING (it does process pipelined commands in order); an
  EHLO hook adds it. A "new style" EHLO hook must set session.host_name itself, or MAIL
  is refused with "503 Error: send HELO first".
- With auth_require_tls (the default) AUTH is advertised and accepted only after
  STARTTLS: aiosmtpd knows nothing of TLS it did not start itself, so on an implicit-TLS
  listener it would refuse AUTH with 538. For implicit TLS we pass auth_require_tls=False
  to aiosmtpd (every session is TLS there anyway).
"""
import argparse
import asyncio
import json
import os
import signal
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--tls", choices=["none", "starttls", "implicit"], default="none")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--require-starttls", action="store_true",
                   help="refuse commands other than EHLO/STARTTLS/QUIT before TLS")
    p.add_argument("--auth-user", default="",
                   help="offer AUTH PLAIN and LOGIN accepting this user (empty: no AUTH)")
    p.add_argument("--auth-password", default="")
    p.add_argument("--auth-required", action="store_true",
                   help="MAIL needs a successful AUTH first (530 otherwise)")
    p.add_argument("--auth-allow-plaintext", action="store_true",
                   help="offer and accept AUTH without TLS")
    p.add_argument("--no-pipelining", action="store_true")
    p.add_argument("--hostname", default="aiosmtpd.test")
    p.add_argument("--ready-file", required=True)
    p.add_argument("--events", required=True)
    return p.parse_args()


class Recorder:
    def __init__(self, path, pipelining, offer_auth):
        self.out = open(path, "a", encoding="utf-8")
        self.pipelining = pipelining
        self.offer_auth = offer_auth

    def write(self, event):
        self.out.write(json.dumps(event) + "\n")
        self.out.flush()

    @staticmethod
    def tls_of(server):
        transport = server.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport else None
        if ssl_object is None:
            return {"tls": False, "tls_version": "", "cipher": ""}
        cipher = ssl_object.cipher()
        return {"tls": True, "tls_version": ssl_object.version() or "",
                "cipher": cipher[0] if cipher else ""}

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if not self.offer_auth:
            # aiosmtpd would advertise its built-in mechanisms (and fail them) anyway.
            responses = [r for r in responses if not r.startswith("250-AUTH")]
        if self.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_DATA(self, server, session, envelope):
        login = session.auth_data  # what the authenticator returned: the user name
        event = {
            "event": "message",
            "helo": session.host_name or "",
            "mail_from": envelope.mail_from or "",
            "mail_options": envelope.mail_options,
            "rcpt_to": list(envelope.rcpt_tos),
            # Bytes as received after dot-unstuffing, CRLF line ends kept; latin-1 maps
            # every byte to one code point, so the C++ side gets the bytes back.
            "content": envelope.original_content.decode("latin-1"),
            "auth_user": login if isinstance(login, str) else "",
        }
        event.update(self.tls_of(server))
        self.write(event)
        return "250 2.0.0 OK queued"


def make_authenticator(recorder, user, password):
    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword)
              and auth_data.login == user.encode()
              and auth_data.password == password.encode())
        login = auth_data.login.decode("latin-1") if isinstance(auth_data, LoginPassword) else ""
        event = {"event": "auth", "mechanism": mechanism, "user": login, "success": ok}
        event.update(Recorder.tls_of(server))
        recorder.write(event)
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)
    return authenticator


def main():
    args = parse_args()
    context = None
    if args.tls != "none":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
    recorder = Recorder(args.events, not args.no_pipelining, bool(args.auth_user))
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    kwargs = {"hostname": args.hostname, "loop": loop}
    if args.tls == "starttls":
        kwargs["tls_context"] = context
        kwargs["require_starttls"] = args.require_starttls
    if args.auth_user:
        kwargs["authenticator"] = make_authenticator(recorder, args.auth_user, args.auth_password)
        kwargs["auth_required"] = args.auth_required
        kwargs["auth_require_tls"] = not args.auth_allow_plaintext and args.tls != "implicit"

    def factory():
        return SMTP(recorder, **kwargs)

    server = loop.run_until_complete(loop.create_server(
        factory, host=args.host, port=args.port,
        ssl=context if args.tls == "implicit" else None))
    port = server.sockets[0].getsockname()[1]
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.add_signal_handler(signal.SIGINT, loop.stop)
    tmp = args.ready_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.rename(tmp, args.ready_file)
    try:
        loop.run_forever()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
