#!/usr/bin/env python3
"""Generates shared/tests/data/jwt_vectors.json: keys and tokens made by independent,
widely used implementations (joserfc for well-formed tokens, pyca/cryptography for
the primitives of crafted ones), so that the policy crate's verifier is tested
against code that is not its own.

Run with `make jwt-vectors` (installs the pinned packages into .tools/venv).
Every token is checked at the fixed time NOW. The Envoy scenario
`tests/tests/auth_vectors.rs` runs this script with `--now <current time> --out <file>`
to send the same attacks, freshly signed, through a real gateway.
"""

import base64
import warnings
import json
import os
import sys

from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc import jwk, jwt

warnings.simplefilter("ignore")  # joserfc warns that EdDSA is being renamed


def option(name, default):
    if name in sys.argv:
        index = sys.argv.index(name)
        if index + 1 < len(sys.argv):
            return sys.argv[index + 1]
        sys.exit(f"{name} needs a value")
    return default


NOW = int(option("--now", 1_796_314_409))
ISSUER = option("--issuer", "https://idp.example")
AUDIENCE = "https://api.example"
OUT = option("--out", os.path.join(os.path.dirname(os.path.abspath(__file__)), "jwt_vectors.json"))


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**extra):
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "client-1", "iat": NOW - 10, "exp": NOW + 600}
    body.update(extra)
    return body


rsa_key = jwk.RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
p256_key = jwk.ECKey.generate_key("P-256", parameters={"kid": "ec-256"})
p384_key = jwk.ECKey.generate_key("P-384", parameters={"kid": "ec-384"})
ed_key = jwk.OKPKey.generate_key("Ed25519", parameters={"kid": "ed-1"})
weak_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
attacker = jwk.RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
secret = b"0123456789abcdef0123456789abcdef"


def public(key):
    return key.as_dict(private=False)


weak_numbers = weak_key.public_key().public_numbers()
jwks = {"keys": [
    public(rsa_key), public(p256_key), public(p384_key), public(ed_key),
    {"kty": "RSA", "kid": "weak", "e": b64(weak_numbers.e.to_bytes(3, "big")),
     "n": b64(weak_numbers.n.to_bytes(128, "big"))},
]}

vectors = []


def case(name, token, expect, keys="jwks", flips=None):
    """`flips`, for a verdict that changes with the clock: (time, verdict), the
    verdict at any time after `time` (the vectors' verdicts hold at NOW)."""
    vector = {"name": name, "token": token, "expect": expect, "keys": keys}
    if flips:
        vector["flips"] = {"after": flips[0], "expect": flips[1]}
    vectors.append(vector)


def signed(alg, key, body=None, header=None):
    head = {"alg": alg, "kid": key.kid}
    head.update(header or {})
    return jwt.encode(head, body or claims(), key, algorithms=[alg])


for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]:
    case(f"{alg} signed by joserfc", signed(alg, rsa_key), "ok")
case("ES256 signed by joserfc", signed("ES256", p256_key), "ok")
case("ES384 signed by joserfc", signed("ES384", p384_key), "ok")
case("EdDSA signed by joserfc", signed("EdDSA", ed_key), "ok")
oct_key = jwk.OctKey.import_key(secret)
case("HS256 with the shared secret", jwt.encode({"alg": "HS256"}, claims(), oct_key, algorithms=["HS256"]), "ok", keys="secret")
case("HS512 with the shared secret", jwt.encode({"alg": "HS512"}, claims(), oct_key, algorithms=["HS512"]), "ok", keys="secret")

good = signed("RS256", rsa_key)
head, body, sig = good.split(".")
other = signed("RS256", rsa_key, claims(sub="client-2"))
o_head, o_body, o_sig = other.split(".")


def raw(header, payload, signature=b""):
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature)])


def rsa_sign(header, payload, key=rsa_key):
    signing_input = (b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())).encode()
    private = key.private_key
    signature = private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return signing_input.decode() + "." + b64(signature)


case("payload changed after signing", ".".join([head, b64(json.dumps(claims(sub="admin")).encode()), sig]), "signature_invalid")
case("signature truncated", ".".join([head, body, b64(base64.urlsafe_b64decode(sig + "==")[:-3])]), "signature_invalid")
case("signature cut mid-character", ".".join([head, body, sig[:-1]]), "token_malformed")
case("payload of another token", ".".join([head, o_body, sig]), "signature_invalid")
case("header and payload swapped", ".".join([body, head, sig]), "token_malformed")
case("signature of another token", ".".join([head, body, o_sig]), "signature_invalid")
case("empty signature", ".".join([head, body, ""]), "token_malformed")
case("two segments", ".".join([head, body]), "token_malformed")
case("one segment", head, "token_malformed")
case("four segments", ".".join([head, body, sig, sig]), "token_malformed")
case("five segments", ".".join([head, body, sig, sig, sig]), "token_malformed")
case("standard base64 with padding", ".".join([head + "==", body, sig]), "token_malformed")
case("standard alphabet signature", ".".join([head, body, sig.replace("-", "+").replace("_", "/") + "+/"]), "token_malformed")
for none in ["none", "None", "NONE", "nOnE"]:
    case(f"alg {none}", raw({"alg": none}, claims(), b""), "token_malformed")
    case(f"alg {none} with a signature", raw({"alg": none}, claims(), b"x"), "algorithm_unsupported")
case("alg missing", raw({"kid": "rsa-1"}, claims(), b"sig"), "token_malformed")
case("alg numeric", raw({"alg": 256, "kid": "rsa-1"}, claims(), b"sig"), "token_malformed")
case("alg not allowed (RS256 key set, provider allows ES256 only)", good, "algorithm_not_allowed", keys="jwks-es256-only")
case("header not JSON", ".".join([b64(b"{alg:RS256"), body, sig]), "token_malformed")
case("header a JSON array", ".".join([b64(b'["RS256"]'), body, sig]), "token_malformed")
case("header invalid UTF-8", ".".join([b64(b'{"alg":"RS256\xff"}'), body, sig]), "token_malformed")
case("header with duplicate alg", ".".join([b64(b'{"alg":"none","alg":"RS256","kid":"rsa-1"}'), body, sig]), "token_malformed")
# Unknown members are skipped without building them: no stack trouble, and the
# signature (made over the original header) no longer matches.
case("header deeply nested", ".".join([b64(('{"alg":"RS256","kid":"rsa-1","x":' + "[" * 500 + "]" * 500 + "}").encode()), body, sig]), "signature_invalid")
case("header nested past any limit", ".".join([b64(('{"alg":"RS256","kid":"rsa-1","x":' + "[" * 5000 + "]" * 5000 + "}").encode()), body, sig]), "token_malformed")
case("oversized token", ".".join([head, b64(b"x" * 20000), sig]), "token_malformed")

payload_not_json = rsa_sign({"alg": "RS256", "kid": "rsa-1"}, claims())
p_head = payload_not_json.split(".")[0]
def rsa_sign_raw(header_b64, payload_bytes):
    signing_input = (header_b64 + "." + b64(payload_bytes)).encode()
    signature = rsa_key.private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return signing_input.decode() + "." + b64(signature)
case("payload not JSON, validly signed", rsa_sign_raw(p_head, b"not json"), "claims_malformed")
case("payload a JSON array, validly signed", rsa_sign_raw(p_head, b"[1,2]"), "claims_malformed")
case("payload invalid UTF-8, validly signed", rsa_sign_raw(p_head, b'{"sub":"\xff"}'), "claims_malformed")
case("payload with a duplicate claim, validly signed",
     rsa_sign_raw(p_head, ('{"iss":"%s","aud":"%s","sub":"a","sub":"admin","exp":%d}' % (ISSUER, AUDIENCE, NOW + 60)).encode()),
     "claims_malformed")

# HS256 signed with the provider's RSA public key as the secret (PEM and DER).
pem = rsa_key.private_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
der = rsa_key.private_key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
for label, material in [("PEM", pem), ("DER", der)]:
    signing_input = (b64(json.dumps({"alg": "HS256", "kid": "rsa-1"}).encode()) + "." + b64(json.dumps(claims()).encode())).encode()
    mac = hmac.HMAC(material, hashes.SHA256())
    mac.update(signing_input)
    case(f"HS256 keyed with the RSA public key ({label})", signing_input.decode() + "." + b64(mac.finalize()), "algorithm_not_allowed")
    # The same trick against a provider that does hold a shared secret: the MAC
    # keyed with the public key is not the secret's.
    hs_input = (b64(json.dumps({"alg": "HS256"}).encode()) + "." + b64(json.dumps(claims()).encode())).encode()
    hs_mac = hmac.HMAC(material, hashes.SHA256())
    hs_mac.update(hs_input)
    case(f"HS256 keyed with the RSA public key ({label}), HMAC provider", hs_input.decode() + "." + b64(hs_mac.finalize()), "signature_invalid", keys="secret")

case("ES256 header naming the RSA key", raw({"alg": "ES256", "kid": "rsa-1"}, claims(), b"\1" * 64), "key_algorithm_mismatch")
case("RS256 header naming the EC key", raw({"alg": "RS256", "kid": "ec-256"}, claims(), b"\1" * 256), "key_algorithm_mismatch")
signing_input = (b64(json.dumps({"alg": "ES256", "kid": "ec-256"}).encode()) + "." + b64(json.dumps(claims()).encode()))
case("ECDSA with r = 0", signing_input + "." + b64(b"\0" * 32 + b"\1" * 32), "signature_invalid")
case("ECDSA with s = 0", signing_input + "." + b64(b"\1" * 32 + b"\0" * 32), "signature_invalid")
case("ECDSA with r = s = 0", signing_input + "." + b64(b"\0" * 64), "signature_invalid")
der_sig = p256_key.private_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
r, s = decode_dss_signature(der_sig)
case("ECDSA signature DER-encoded instead of r||s", signing_input + "." + b64(der_sig), "signature_invalid")
case("ECDSA r||s made by pyca/cryptography", signing_input + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big")), "ok")

weak_input = (b64(json.dumps({"alg": "RS256", "kid": "weak"}).encode()) + "." + b64(json.dumps(claims()).encode())).encode()
case("RS256 by a 1024-bit key in the set", weak_input.decode() + "." + b64(weak_key.sign(weak_input, padding.PKCS1v15(), hashes.SHA256())), "key_unknown")
case("unknown kid", raw({"alg": "RS256", "kid": "nope"}, claims(), b"\1" * 256), "key_unknown")
case("kid as a number", raw({"alg": "RS256", "kid": 1}, claims(), b"\1" * 256), "token_malformed")
case("kid long", raw({"alg": "RS256", "kid": "k" * 1000}, claims(), b"\1" * 256), "key_unknown")
case("kid past the header limit", raw({"alg": "RS256", "kid": "k" * 5000}, claims(), b"\1" * 256), "token_malformed")
case("kid with path characters", raw({"alg": "RS256", "kid": "../../etc/passwd"}, claims(), b"\1" * 256), "key_unknown")
case("kid with control characters", raw({"alg": "RS256", "kid": "rsa-1\u0000"}, claims(), b"\1" * 256), "key_unknown")
case("unknown crit", rsa_sign({"alg": "RS256", "kid": "rsa-1", "crit": ["x-ext"], "x-ext": 1}, claims()), "critical_header_unknown")
for member in ["jwk", "jku", "x5u", "x5c"]:
    extra = {"jwk": public(attacker), "jku": "https://evil.example/jwks", "x5u": "https://evil.example/cert",
             "x5c": ["MIIB"]}[member]
    case(f"{member} header with the attacker's key is ignored",
         rsa_sign({"alg": "RS256", "kid": "rsa-1", member: extra}, claims(), key=attacker), "signature_invalid")
    case(f"{member} header on a good token is ignored", rsa_sign({"alg": "RS256", "kid": "rsa-1", member: extra}, claims()), "ok")

# Claims, in tokens validly signed by pyca/cryptography (raw JSON, so that wrong
# types and out-of-range numbers are exactly as written). The provider: clock skew
# 60 s, maximum lifetime 3600 s, `sub` required.
def claims_case(name, payload, expect, flips=None):
    text = payload if isinstance(payload, str) else json.dumps(payload)
    case(name, rsa_sign_raw(p_head, text.encode()), expect, flips=flips)


def without(name, **extra):
    body = claims(**extra)
    del body[name]
    return body


claims_case("exp at the skew boundary", claims(iat=NOW - 600, exp=NOW - 60), "ok", flips=(NOW, "token_expired"))
claims_case("exp one second past the skew", claims(iat=NOW - 600, exp=NOW - 61), "token_expired")
claims_case("exp missing", without("exp"), "claim_missing")
claims_case("exp null", claims(exp=None), "claims_malformed")
claims_case("exp as a string", claims(exp=str(NOW + 600)), "claims_malformed")
claims_case("exp as a float", claims(exp=NOW + 600.5), "claims_malformed")
claims_case("exp as a whole float", claims(exp=float(NOW + 600)), "claims_malformed")
claims_case("exp negative", claims(iat=-100, exp=-1), "token_expired")
claims_case("exp huge (i64 max)", claims(exp=9223372036854775807), "token_lifetime_too_long")
claims_case("exp past any integer", '{"iss":"%s","aud":"%s","sub":"client-1","exp":99999999999999999999}' % (ISSUER, AUDIENCE), "claims_malformed")
claims_case("nbf at the skew boundary", claims(nbf=NOW + 60), "ok")
claims_case("nbf one second past the skew", claims(nbf=NOW + 61), "token_not_yet_valid", flips=(NOW, "ok"))
claims_case("nbf an hour ahead", claims(nbf=NOW + 3600), "token_not_yet_valid")
claims_case("nbf as a string", claims(nbf=str(NOW - 10)), "claims_malformed")
claims_case("iat at the skew boundary", claims(iat=NOW + 60), "ok")
claims_case("iat one second past the skew", claims(iat=NOW + 61), "token_issued_in_future", flips=(NOW, "ok"))
claims_case("iat an hour ahead", claims(iat=NOW + 3600, exp=NOW + 3700), "token_issued_in_future")
claims_case("lifetime at the maximum", claims(iat=NOW - 10, exp=NOW + 3590), "ok")
claims_case("lifetime one second over the maximum", claims(iat=NOW - 10, exp=NOW + 3591), "token_lifetime_too_long")
claims_case("lifetime over the maximum without iat", without("iat", exp=NOW + 3601), "token_lifetime_too_long", flips=(NOW, "ok"))
claims_case("issuer in another case", claims(iss=ISSUER.upper()), "issuer_mismatch")
claims_case("issuer with a trailing slash", claims(iss=ISSUER + "/"), "issuer_mismatch")
claims_case("issuer as an array", claims(iss=[ISSUER]), "issuer_mismatch")
claims_case("issuer missing", without("iss"), "claim_missing")
claims_case("audience in another case", claims(aud=AUDIENCE.upper()), "audience_mismatch")
claims_case("audience with a trailing slash", claims(aud=AUDIENCE + "/"), "audience_mismatch")
claims_case("audience as a number", claims(aud=7), "audience_mismatch")
claims_case("audience list with a number", claims(aud=[AUDIENCE, 7]), "audience_mismatch")
claims_case("audience list without ours", claims(aud=["https://other.example"]), "audience_mismatch")
claims_case("audience list with ours", claims(aud=["https://other.example", AUDIENCE]), "ok")
claims_case("audience missing", without("aud"), "claim_missing")
claims_case("required sub missing", without("sub"), "claim_missing")

# Tokens for the auth decision tests.
rotated_key = jwk.RSAKey.generate_key(2048, parameters={"kid": "rsa-2"})
named_tokens = {
    "user": signed("RS256", rsa_key, claims(sub="alice", roles=["user"], plan="pro")),
    "admin": signed("RS256", rsa_key, claims(sub="root", roles=["admin", "user"])),
    "no_roles": signed("RS256", rsa_key, claims(sub="bob")),
    "expired": signed("RS256", rsa_key, claims(sub="alice", roles=["user"], iat=NOW - 4000, exp=NOW - 3000)),
    "other_issuer": signed("RS256", rsa_key, claims(iss="https://elsewhere.example")),
    "rotated_key": signed("RS256", rotated_key, claims(sub="carol", roles=["user"])),
}

with open(OUT, "w") as out:
    json.dump({
        "now": NOW, "issuer": ISSUER, "audience": AUDIENCE,
        "jwks": jwks, "secret": b64(secret), "vectors": vectors,
        "tokens": named_tokens, "rotated_jwks": {"keys": [public(rotated_key)]},
    }, out, indent=1)
print(f"wrote {len(vectors)} vectors to {OUT}")
