#!/usr/bin/env python3
"""Client assertions (RFC 7523) made independently of the product, for tests/client_assertions.rs.

Input (stdin), one JSON object by "op":
  {"op": "keys"}: a private and a public JWK for RS256, ES256 and EdDSA (jwcrypto), kids
      "rs", "es", "ed" -> {"RS256": {"private": jwk, "public": jwk}, ...}
  {"op": "sign", "key": private JWK (or an oct JWK for HS256), "alg", "claims", "header"}:
      a compact JWS (jwcrypto); alg "none" makes an unsigned one by hand -> {"token": ...}
  {"op": "authlib", "url", "ca", "client_id", "key": private JWK, "alg", "call":
      "client_credentials" | "introspect" | "revoke", "token" (introspect, revoke)}:
      authlib's OAuth2Session with its PrivateKeyJWT (which signs a one-hour assertion with
      a fresh jti, aud the URL called) -> the JSON answer, or {"status", "error"}.
"""
import base64
import json
import sys

from jwcrypto import jwk, jws


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def keys():
    out = {}
    for alg, kid, make in [
        ("RS256", "rs", lambda: jwk.JWK.generate(kty="RSA", size=2048)),
        ("ES256", "es", lambda: jwk.JWK.generate(kty="EC", crv="P-256")),
        ("EdDSA", "ed", lambda: jwk.JWK.generate(kty="OKP", crv="Ed25519")),
    ]:
        key = make()
        private = json.loads(key.export_private())
        private.update({"kid": kid, "alg": alg, "use": "sig"})
        public = json.loads(key.export_public())
        public.update({"kid": kid, "alg": alg, "use": "sig"})
        out[alg] = {"private": private, "public": public}
    return out


def sign(args):
    header = {"alg": args["alg"], **(args.get("header") or {})}
    header = {k: v for k, v in header.items() if v is not None}
    payload = json.dumps(args["claims"]).encode()
    if args["alg"] == "none":
        return {"token": f"{b64(json.dumps(header).encode())}.{b64(payload)}."}
    token = jws.JWS(payload)
    token.add_signature(jwk.JWK(**args["key"]), None, protected=json.dumps(header))
    return {"token": token.serialize(compact=True)}


def with_authlib(args):
    from authlib.integrations.requests_client import OAuth2Session, OAuthError
    from authlib.oauth2.rfc7523 import PrivateKeyJWT
    from joserfc.jwk import ECKey, OKPKey, RSAKey

    # authlib reads a bare key as RSA; EC and OKP keys are given as joserfc keys.
    kind = {"RSA": RSAKey, "EC": ECKey, "OKP": OKPKey}[args["key"]["kty"]]
    session = OAuth2Session(
        client_id=args["client_id"],
        client_secret=kind.import_key(args["key"]),
        token_endpoint_auth_method="private_key_jwt",
        revocation_endpoint_auth_method="private_key_jwt",
    )
    session.register_client_auth_method(PrivateKeyJWT(alg=args["alg"]))
    if args["call"] == "client_credentials":
        try:
            token = session.fetch_token(args["url"], grant_type="client_credentials", verify=args["ca"])
        except OAuthError as e:
            return {"status": 400, "body": {"error": e.error, "error_description": e.description}}
        return {"status": 200, "body": dict(token)}
    call = session.introspect_token if args["call"] == "introspect" else session.revoke_token
    resp = call(args["url"], token=args["token"], verify=args["ca"])
    body = resp.json() if resp.content else {}
    return {"status": resp.status_code, "body": body}


def main():
    args = json.load(sys.stdin)
    op = args["op"]
    out = keys() if op == "keys" else sign(args) if op == "sign" else with_authlib(args)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
