#!/usr/bin/env python3
"""Makes the TLS material of the demo and the tests, never committed: a private CA,
the gateway's server certificate (what clients see on https://127.0.0.1:8443), the
gateway's client certificate (what it shows a backend over mutual TLS), and a
backend's server certificate. Run by `make certs`; the files go to OUT (default
target/certs). Existing files are kept unless --force.

usage: make_certs.py [OUT] [--force]
"""

import datetime
import ipaddress
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAMES = ["ca.pem", "gateway.pem", "gateway-key.pem", "gateway-client.pem", "gateway-client-key.pem",
         "backend.pem", "backend-key.pem"]


def name(common):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gatehouse demo"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


def write(path, data):
    with open(path + ".partial", "wb") as out:
        out.write(data)
    os.replace(path + ".partial", path)


def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def issue(ca_key, ca_cert, common, usage, dns=(), ips=()):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(name(common))
               .issuer_name(ca_cert.subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=365))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    alt = [x509.DNSName(host) for host in dns] + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return key, cert


def main(argv):
    force = "--force" in argv
    rest = [arg for arg in argv if arg != "--force"]
    out = rest[0] if rest else os.path.join(ROOT, "target/certs")
    os.makedirs(out, exist_ok=True)
    if not force and all(os.path.exists(os.path.join(out, file)) for file in NAMES):
        print(f"certificates already in {out}")
        return 0
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_cert = (x509.CertificateBuilder()
               .subject_name(name("gatehouse demo CA"))
               .issuer_name(name("gatehouse demo CA"))
               .public_key(ca_key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=3650))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    server_key, server = issue(ca_key, ca_cert, "gatehouse gateway", ExtendedKeyUsageOID.SERVER_AUTH,
                               dns=["localhost", "gateway.gatehouse.test"], ips=["127.0.0.1"])
    client_key, client = issue(ca_key, ca_cert, "gatehouse-gateway", ExtendedKeyUsageOID.CLIENT_AUTH)
    backend_key, backend = issue(ca_key, ca_cert, "accounts backend", ExtendedKeyUsageOID.SERVER_AUTH,
                                 dns=["localhost", "accounts.gatehouse.test"], ips=["127.0.0.1"])
    pem = lambda cert: cert.public_bytes(serialization.Encoding.PEM)
    write(os.path.join(out, "ca.pem"), pem(ca_cert))
    write(os.path.join(out, "gateway.pem"), pem(server))
    write(os.path.join(out, "gateway-key.pem"), key_pem(server_key))
    write(os.path.join(out, "gateway-client.pem"), pem(client))
    write(os.path.join(out, "gateway-client-key.pem"), key_pem(client_key))
    write(os.path.join(out, "backend.pem"), pem(backend))
    write(os.path.join(out, "backend-key.pem"), key_pem(backend_key))
    print(f"certificates written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
