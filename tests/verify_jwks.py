#!/usr/bin/env python3
"""Verifies JWTs against a JWKS with jwcrypto, a JOSE library independent of the product.

Input (stdin): {"jwks": {...}, "tokens": ["<compact JWS>", ...]}
Output (stdout): {"keys": [{kid, kty, alg, rsa_bits | curve + on_curve | okp}],
                  "tokens": [{valid, alg, kid, typ, payload} | {valid: false, error}]}
"""
import json
import sys

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwcrypto import jwk, jws

ALGS = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "EdDSA"]


def describe(key):
    public = key.get_op_key("verify")
    info = {"kid": key.get("kid"), "kty": key.get("kty"), "alg": key.get("alg"), "use": key.get("use")}
    if isinstance(public, rsa.RSAPublicKey):
        info["rsa_bits"] = public.key_size
    elif isinstance(public, ec.EllipticCurvePublicKey):
        numbers = public.public_numbers()
        info["curve"] = public.curve.name
        # Rebuilding the key from its coordinates fails for a point off the curve.
        try:
            ec.EllipticCurvePublicNumbers(numbers.x, numbers.y, public.curve).public_key()
            info["on_curve"] = True
        except ValueError:
            info["on_curve"] = False
    elif isinstance(public, ed25519.Ed25519PublicKey):
        info["okp"] = "Ed25519"
    return info


def main():
    data = json.load(sys.stdin)
    keyset = jwk.JWKSet.from_json(json.dumps(data["jwks"]))
    report = {"keys": [describe(k) for k in keyset["keys"]], "tokens": []}
    for token in data["tokens"]:
        try:
            obj = jws.JWS()
            obj.allowed_algs = ALGS
            obj.deserialize(token)
            header = obj.jose_header
            key = keyset.get_key(header.get("kid"))
            if key is None:
                raise ValueError("no key with kid %r" % header.get("kid"))
            obj.verify(key, alg=header["alg"])
            report["tokens"].append(
                {
                    "valid": True,
                    "alg": header["alg"],
                    "kid": header["kid"],
                    "typ": header.get("typ"),
                    "payload": json.loads(obj.payload),
                }
            )
        except Exception as e:  # noqa: BLE001 - every failure is a result here
            report["tokens"].append({"valid": False, "error": "%s: %s" % (type(e).__name__, e)})
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
