#!/usr/bin/env python3
"""An external OpenID issuer for the login tests, independent of the product: its keys are
made and its tokens signed by jwcrypto. It serves HTTPS with a certificate the test gives it.

  GET  /.well-known/openid-configuration   discovery ({issuer, jwks_uri})
  GET  /jwks                               the published keys
  POST /mint     {alg, claims, mode?}      -> {token}; claims are merged over defaults
                 (iss, aud=oidc-operator, sub, iat, nbf, exp=+300); a null value removes one.
                 mode: none | hs256-pubkey | bad-signature | no-kid | unpublished
  POST /publish                            publishes keys minted with mode=unpublished
  GET  /stats                              {jwks_fetches}

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
state = {"published": {}, "pending": {}, "jwks_fetches": 0, "counter": 0}


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

    def do_GET(self):
        base = self.server.base
        if self.path == "/.well-known/openid-configuration":
            self.reply({"issuer": base, "jwks_uri": base + "/jwks", "id_token_signing_alg_values_supported": list(ALG_KEYS)})
        elif self.path == "/jwks":
            with lock:
                state["jwks_fetches"] += 1
                keys = [json.loads(k.export_public()) for k in state["published"].values()]
            self.reply({"keys": keys})
        elif self.path == "/stats":
            with lock:
                self.reply({"jwks_fetches": state["jwks_fetches"]})
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
