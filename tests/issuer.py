#!/usr/bin/env python3
"""An external OpenID issuer for the login tests, independent of the product: its keys are
made and its tokens signed by jwcrypto. It serves HTTPS with a certificate the test gives it.

  GET  /.well-known/openid-configuration   discovery ({issuer, jwks_uri})
  GET  /jwks                               the published keys
  POST /mint     {alg, claims, mode?, header?} -> {token}; claims are merged over defaults
                 (iss, aud=oidc-operator, sub, iat, nbf, exp=+300); a null value removes one.
                 mode: none | hs256-pubkey | bad-signature | no-kid | unpublished |
                 raw-header (EdDSA only: `header` members are merged into the protected header
                 and signed by hand, so members jwcrypto itself refuses, like crit, can be sent)
  POST /publish                            publishes keys minted with mode=unpublished
  GET  /stats                              {jwks_fetches, failing_fetches, redirect_target_fetches}

Misbehaving issuers, each under its own path prefix P (its discovery URL is
BASE/P/.well-known/openid-configuration):
  other-issuer     its discovery document names BASE as issuer, not BASE/other-issuer
  redirect-away    discovery redirects to https://localhost:PORT/redirect-away-target (another
                   origin), which would serve a valid document for BASE/redirect-away
  redirect-same    discovery redirects to BASE/redirect-same/moved (same origin; valid)
  not-for-signing  valid discovery; its JWKS has the published keys marked as not for
                   signatures (RS256: alg RSA-OAEP; ES256: key_ops [deriveKey]; EdDSA: use enc)
  failing          discovery answers 500 (counted in failing_fetches)

Prints "listening https://127.0.0.1:PORT" once ready.
"""
import argparse
import base64
import hashlib
import hmac
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from jwcrypto import jwk, jws

ALG_KEYS = {
    "RS256": lambda: jwk.JWK.generate(kty="RSA", size=2048),
    "ES256": lambda: jwk.JWK.generate(kty="EC", crv="P-256"),
    "EdDSA": lambda: jwk.JWK.generate(kty="OKP", crv="Ed25519"),
}

lock = threading.Lock()
state = {"published": {}, "pending": {}, "jwks_fetches": 0, "counter": 0, "failing_fetches": 0,
         "redirect_target_fetches": 0}
WELL_KNOWN = "/.well-known/openid-configuration"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_key(alg, kid):
    key = ALG_KEYS[alg]()
    key.update(kid=kid, alg=alg, use="sig")
    return key


def sign(key, alg, claims, kid=True):
    header = {"alg": alg, "typ": "JWT"}
    if kid:
        header["kid"] = key.get("kid")
    token = jws.JWS(json.dumps(claims).encode())
    token.add_signature(key, alg=alg, protected=json.dumps(header))
    return token.serialize(compact=True)


def mint(base, body):
    alg = body.get("alg", "RS256")
    now = int(time.time())
    claims = {"iss": base, "aud": "oidc-operator", "sub": "system:serviceaccount:ci:runner",
              "iat": now, "nbf": now, "exp": now + 300}
    for k, v in body.get("claims", {}).items():
        if v is None:
            claims.pop(k, None)
        else:
            claims[k] = v
    mode = body.get("mode")
    with lock:
        key = next(k for k in state["published"].values() if k.get("alg") == alg)
        if mode == "unpublished":
            state["counter"] += 1
            key = new_key(alg, "rotated-%d" % state["counter"])
            state["pending"][key.get("kid")] = key
    if mode == "raw-header":
        header = {"alg": "EdDSA", "kid": key.get("kid"), "typ": "JWT"}
        header.update(body.get("header", {}))
        signing_input = "%s.%s" % (b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()))
        signature = key.get_op_key("sign").sign(signing_input.encode())
        return "%s.%s" % (signing_input, b64(signature))
    if mode == "none":
        header = {"alg": "none", "kid": key.get("kid")}
        return "%s.%s." % (b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()))
    if mode == "hs256-pubkey":
        # The classic confusion attack: HMAC keyed with the public key's PEM.
        header = {"alg": "HS256", "kid": key.get("kid")}
        signing_input = "%s.%s" % (b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()))
        secret = key.export_to_pem(private_key=False)
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return "%s.%s" % (signing_input, b64(mac))
    token = sign(key, alg, claims, kid=(mode != "no-kid"))
    if mode == "bad-signature":
        head, payload, sig = token.split(".")
        raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
        raw[len(raw) // 2] ^= 0x01
        token = "%s.%s.%s" % (head, payload, b64(bytes(raw)))
    return token


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, obj, status=200):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def published_jwks(self):
        with lock:
            return [json.loads(k.export_public()) for k in state["published"].values()]

    def misbehaving(self, base):
        """The prefixed issuers (see the module doc); True when the path was one of theirs."""
        port = self.server.server_address[1]
        path = self.path
        if path == "/other-issuer" + WELL_KNOWN:
            self.reply({"issuer": base, "jwks_uri": base + "/jwks"})
        elif path == "/redirect-away" + WELL_KNOWN:
            self.redirect("https://localhost:%d/redirect-away-target" % port)
        elif path == "/redirect-away-target":
            with lock:
                state["redirect_target_fetches"] += 1
            self.reply({"issuer": base + "/redirect-away", "jwks_uri": base + "/jwks"})
        elif path == "/redirect-same" + WELL_KNOWN:
            self.redirect(base + "/redirect-same/moved")
        elif path == "/redirect-same/moved":
            self.reply({"issuer": base + "/redirect-same", "jwks_uri": base + "/jwks"})
        elif path == "/not-for-signing" + WELL_KNOWN:
            self.reply({"issuer": base + "/not-for-signing", "jwks_uri": base + "/not-for-signing/jwks"})
        elif path == "/not-for-signing/jwks":
            keys = []
            for k in self.published_jwks():
                k.pop("use", None)
                if k.get("alg") == "RS256":
                    k["alg"] = "RSA-OAEP"
                elif k.get("alg") == "ES256":
                    k["key_ops"] = ["deriveKey"]
                else:
                    k["use"] = "enc"
                keys.append(k)
            self.reply({"keys": keys})
        elif path == "/failing" + WELL_KNOWN:
            with lock:
                state["failing_fetches"] += 1
            self.reply({"error": "down for maintenance"}, 500)
        else:
            return False
        return True

    def do_GET(self):
        base = self.server.base
        if self.misbehaving(base):
            return
        if self.path == "/.well-known/openid-configuration":
            self.reply({"issuer": base, "jwks_uri": base + "/jwks", "id_token_signing_alg_values_supported": list(ALG_KEYS)})
        elif self.path == "/jwks":
            with lock:
                state["jwks_fetches"] += 1
                keys = [json.loads(k.export_public()) for k in state["published"].values()]
            self.reply({"keys": keys})
        elif self.path == "/stats":
            with lock:
                counts = {k: state[k] for k in ("jwks_fetches", "failing_fetches", "redirect_target_fetches")}
            self.reply(counts)
        else:
            self.reply({"error": "not found"}, 404)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/mint":
            self.reply({"token": mint(self.server.base, body)})
        elif self.path == "/publish":
            with lock:
                state["published"].update(state["pending"])
                state["pending"].clear()
            self.reply({"published": True})
        else:
            self.reply({"error": "not found"}, 404)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    for alg in ALG_KEYS:
        state["published"]["%s-1" % alg.lower()] = new_key(alg, "%s-1" % alg.lower())
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.base = "https://127.0.0.1:%d" % server.server_address[1]
    print("listening " + server.base, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
