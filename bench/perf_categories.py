#!/usr/bin/env python3
"""Group a flat `perf report --no-children --sort dso,symbol` listing into coarse buckets.

usage: perf report ... --sort dso,symbol --stdio -g none --percent-limit 0 | perf_categories.py
"""
import collections
import re
import sys

RULES = [
    ("kernel (syscalls, TCP/IP loopback, scheduler)", r"\[kernel"),
    ("glibc malloc/free", r"libc.*(malloc|free|_int_|unlink_chunk|consolidate|realloc|tcache)"),
    ("memcpy/memmove/memset", r"mem(move|cpy|set|cmp)"),
    ("libc other", r"libc\.so"),
    ("OpenSSL EC/X25519/ML-KEM/SHA math", r"(bn_|BN_|ecp_|EC_|ec_|p256|nistz|x25519|X25519|fe_|fe64|sha256|SHA256|sha512|sha1_|Keccak|ntt|matrix_expand|cpa|ml_kem|ecdsa|ECDSA|mul_mont|sqr_mont|cmov)"),
    ("OpenSSL AES-GCM", r"(aes|gcm|GCM|ghash|AES)"),
    ("OpenSSL ASN.1/X509/decoders", r"(asn1|ASN1|x509|X509|d2i|i2d|DECODER|decoder|der_|DER|PEM|pem)"),
    ("OpenSSL other (state machine, providers, lookups, CRYPTO_malloc)", r"(ossl|OSSL|ssl|SSL|tls|EVP|evp|CRYPTO|OPENSSL|lh_|sk_|ERR_|provider|property)"),
    ("tokio/mio (runtime, I/O readiness, timers)", r"(tokio::|mio::)"),
    ("pingora (proxy, HTTP/1 sessions, pools, timeouts)", r"pingora"),
    ("http/httparse/bytes (header maps, parsing)", r"(httparse|http::|bytes::)"),
    ("prometheus", r"prometheus"),
    ("m2m_auth_proxy (our code)", r"m2m_auth_proxy"),
    ("regex", r"regex"),
    ("Rust alloc/drop/core/std", r"(alloc::|drop_in_place|core::|std::|hash)"),
]
buckets = collections.Counter()
total = 0.0
for line in sys.stdin:
    m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+\[.\]\s+(.*)", line)
    if not m:
        continue
    pct, dso, sym = float(m.group(1)), m.group(2), m.group(3).strip()
    total += pct
    s = dso + " " + sym
    for name, rx in RULES:
        if re.search(rx, s):
            buckets[name] += pct
            break
    else:
        buckets["other (%s)" % dso] += pct
for name, pct in buckets.most_common():
    print("%6.1f%%  %s" % (pct, name))
print("%6.1f%%  (total of listed samples)" % total)
