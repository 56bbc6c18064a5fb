#!/usr/bin/env python3
"""A third-party OAuth client (authlib) against the provider: client_credentials and refresh.

Input (stdin): {"token_endpoint", "ca", "client_id", "client_secret", "auth_method",
                "grant": "client_credentials" | "refresh_token",
                "resource" (client_credentials, optional), "refresh_token" (refresh_token)}
Output (stdout): the token response as authlib returns it, or {"error": ..., "description": ...}.
"""
import json
import sys

from authlib.integrations.requests_client import OAuth2Session, OAuthError


def main():
    args = json.load(sys.stdin)
    session = OAuth2Session(
        client_id=args["client_id"],
        client_secret=args["client_secret"],
        token_endpoint_auth_method=args.get("auth_method", "client_secret_basic"),
    )
    try:
        if args["grant"] == "client_credentials":
            extra = {"resource": args["resource"]} if args.get("resource") else {}
            token = session.fetch_token(
                args["token_endpoint"], grant_type="client_credentials", verify=args["ca"], **extra
            )
        else:
            token = session.refresh_token(
                args["token_endpoint"], refresh_token=args["refresh_token"], verify=args["ca"]
            )
        json.dump(dict(token), sys.stdout)
    except OAuthError as e:
        json.dump({"error": e.error, "description": e.description}, sys.stdout)


if __name__ == "__main__":
    main()
