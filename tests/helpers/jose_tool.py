#!/usr/bin/env python3
"""Keys and tokens for the integration tests, made by joserfc (an independent,
widely used JOSE implementation), never by the code under test.

  jose_tool.py keys ALG KID      -> {"private": JWK, "jwks": {"keys": [public JWK]}}
  jose_tool.py sign < request    -> the compact token; request is
                                    {"key": private JWK, "header": {...}, "claims": {...}}
"""

import json
import sys
import warnings

from joserfc import jwk, jwt

warnings.simplefilter("ignore")  # joserfc warns that EdDSA is being renamed

GENERATORS = {
    "RS256": lambda kid: jwk.RSAKey.generate_key(2048, parameters={"kid": kid}),
    "PS256": lambda kid: jwk.RSAKey.generate_key(2048, parameters={"kid": kid}),
    "ES256": lambda kid: jwk.ECKey.generate_key("P-256", parameters={"kid": kid}),
    "ES384": lambda kid: jwk.ECKey.generate_key("P-384", parameters={"kid": kid}),
    "EdDSA": lambda kid: jwk.OKPKey.generate_key("Ed25519", parameters={"kid": kid}),
}


def main():
    command = sys.argv[1]
    if command == "keys":
        key = GENERATORS[sys.argv[2]](sys.argv[3])
        print(json.dumps({"private": key.as_dict(private=True), "jwks": {"keys": [key.as_dict(private=False)]}}))
    elif command == "sign":
        request = json.load(sys.stdin)
        key = jwk.import_key(request["key"])
        header = request["header"]
        print(jwt.encode(header, request["claims"], key, algorithms=[header["alg"]]))
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
