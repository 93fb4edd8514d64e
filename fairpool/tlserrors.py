"""Readable reasons for failed TLS handshakes.

OpenSSL reports a refused certificate as a verification code on the side
that refused it and as an alert on the other side; both are turned here into
one line a user can act on ("the scheduler refused this certificate: it has
expired"). ``server_side`` says which end we are: the scheduler (its peer
is a client, node or admin) or a connecting party (its peer is the scheduler).
"""

from __future__ import annotations

import ssl
from pathlib import Path

# X509_V_ERR_* codes (openssl/x509_vfy.h).
_NOT_YET_VALID, _EXPIRED = 9, 10
_UNKNOWN_ISSUER = frozenset({2, 18, 19, 20, 21})  # no path to our CA: another CA, or self-signed
_INVALID_PURPOSE = 26
# Signed by a certificate that may not sign, or too long a chain (24 and 79: INVALID_CA in OpenSSL 1.1 and 3).
_ISSUER_NOT_A_CA = frozenset({24, 25, 37, 79})
_HOST_MISMATCH = frozenset({62, 64})  # host name, IP address

# What a received alert means, said of our own certificate.
_ALERTS = {
    "TLSV1_ALERT_UNKNOWN_CA": "it is not signed by {their} CA",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "it has expired (or is not valid yet)",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "it is not for this use (wrong role: {wrong})",
    "SSLV3_ALERT_BAD_CERTIFICATE": "bad certificate (e.g. not valid for the host name used)",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the certificate could not be checked",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "it has been revoked",
    "TLSV1_ALERT_CERTIFICATE_REQUIRED": "a certificate is required",
}
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
                      "HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "UNKNOWN_PROTOCOL", "RECORD_LENGTH_MISMATCH"})
_NO_COMMON_VERSION = frozenset({"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE",
                                "TLSV1_ALERT_INAPPROPRIATE_FALLBACK"})
_NO_COMMON_CIPHER = frozenset({"SSLV3_ALERT_HANDSHAKE_FAILURE", "NO_SHARED_CIPHER", "NO_CIPHERS_AVAILABLE"})


def describe_verify_failure(exc: ssl.SSLCertVerificationError, *, server_side: bool, ca: Path,
                            host: str | None = None) -> str:
    """Why we refused the peer's certificate."""
    code = exc.verify_code
    if server_side:
        whose, our_ca = "the peer's certificate", f"this scheduler's CA ({ca})"
        wrong = "a scheduler certificate cannot connect to a scheduler"
    else:
        whose, our_ca = f"the scheduler's certificate (at {host})", f"our CA ({ca})"
        wrong = "it is not a scheduler certificate"
    if code == _EXPIRED:
        return f"{whose} has expired"
    if code == _NOT_YET_VALID:
        return f"{whose} is not valid yet (are the clocks in sync?)"
    if code in _UNKNOWN_ISSUER:
        return f"{whose} is not signed by {our_ca}"
    if code in _ISSUER_NOT_A_CA:
        return f"{whose} is not signed by {our_ca} itself (its issuer may not issue certificates)"
    if code == _INVALID_PURPOSE:
        return f"{whose} is for another role: {wrong}"
    if code in _HOST_MISMATCH:
        return (f"{whose} is not valid for the host name {host!r} "
                f"(issue it with `fairpool certs issue scheduler NAME --host {host}`)")
    return f"{whose} was refused: {exc.verify_message or exc.reason or exc}"


def describe_alert(exc: ssl.SSLError, *, server_side: bool, host: str | None = None) -> str:
    """Why a TLS handshake failed other than by our verification: mostly, the peer refused us."""
    reason = exc.reason or ""
    peer = "the peer" if server_side else "the scheduler"
    if reason in _ALERTS:
        text = _ALERTS[reason].format(
            their="the peer's" if server_side else "the scheduler's",
            wrong="not a scheduler certificate" if server_side else "not a client, node or admin certificate",
        )
        whose = "the scheduler's certificate" if server_side else "this certificate"
        return f"{peer} refused {whose}: {text}"
    if reason in _NOT_TLS:
        if server_side:
            return "the peer does not speak TLS"
        return f"the server at {host} does not speak TLS (is the scheduler configured with tls?)"
    if reason in _NO_COMMON_VERSION:
        return f"{peer} has no TLS version in common with us (fairpool needs TLS 1.2 or later)"
    if reason in _NO_COMMON_CIPHER:
        return f"{peer} has no TLS cipher in common with us"
    if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        return "the peer presented no certificate (a client certificate is required)"
    if reason == "UNEXPECTED_EOF_WHILE_READING" or isinstance(exc, ssl.SSLEOFError):
        return f"{peer} closed the connection during the TLS handshake" + ("" if server_side else
                                                                          " (its log says why)")
    return f"TLS handshake with {peer} failed: {reason or exc}"
