"""The PKI a test control plane needs: a CA, the API server's serving certificate,
an admin client certificate in system:masters, service-account signing keys, and the
front proxy's CA and client certificate (the aggregation layer: the API server proxies an
APIService's requests with it, and the extension server trusts the user it names)."""
from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path
    sa_pub: Path
    front_proxy_ca_cert: Path
    front_proxy_cert: Path
    front_proxy_key: Path


FRONT_PROXY_CLIENT = "front-proxy-client"  # the name an extension server accepts its proxied requests from


def _write_key(path: Path, key) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def _name(common_name: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _cert(subject, issuer, public_key, signing_key, *, ca: bool, usages=(), sans=()) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True
        ).add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


API_HOSTS = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")
SERVICE_CIDR = "10.0.0.0/24"
API_SERVICE_IP = "10.0.0.1"  # the `kubernetes` Service: the first IP of SERVICE_CIDR


def generate(directory: Path, hosts: tuple[str, ...] = API_HOSTS, extra_ips: tuple[str, ...] = ()) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(*(directory / n for n in ("ca.crt", "ca.key", "apiserver.crt", "apiserver.key",
                                         "admin.crt", "admin.key", "sa.key", "sa.pub",
                                         "front-proxy-ca.crt", "front-proxy.crt", "front-proxy.key")))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("hyft-envtest-ca")
    ca = _cert(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True)

    serving_key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName(h) for h in hosts] + [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address(API_SERVICE_IP)),
        *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in extra_ips),
    ]
    serving = _cert(_name("kube-apiserver"), ca_name, serving_key.public_key(), ca_key, ca=False,
                    usages=[ExtendedKeyUsageOID.SERVER_AUTH], sans=sans)

    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin = _cert(_name("envtest-admin", "system:masters"), ca_name, admin_key.public_key(), ca_key, ca=False,
                  usages=[ExtendedKeyUsageOID.CLIENT_AUTH])

    # RSA: the token signer every Kubernetes version accepts.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    # a CA of its own, as kubeadm does: a client certificate of the main CA cannot pose as the proxy
    proxy_ca_key = ec.generate_private_key(ec.SECP256R1())
    proxy_ca_name = _name("hyft-envtest-front-proxy-ca")
    proxy_ca = _cert(proxy_ca_name, proxy_ca_name, proxy_ca_key.public_key(), proxy_ca_key, ca=True)
    proxy_key = ec.generate_private_key(ec.SECP256R1())
    proxy = _cert(_name(FRONT_PROXY_CLIENT), proxy_ca_name, proxy_key.public_key(), proxy_ca_key, ca=False,
                  usages=[ExtendedKeyUsageOID.CLIENT_AUTH])

    for path, cert in ((pki.ca_cert, ca), (pki.serving_cert, serving), (pki.admin_cert, admin),
                       (pki.front_proxy_ca_cert, proxy_ca), (pki.front_proxy_cert, proxy)):
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    for path, key in ((pki.ca_key, ca_key), (pki.serving_key, serving_key), (pki.admin_key, admin_key),
                      (pki.sa_key, sa_key), (pki.front_proxy_key, proxy_key)):
        _write_key(path, key)
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return pki
