#!/usr/bin/env bash
# Regenerates the development PKI in certs/dev/ with the openssl CLI.
# INSECURE: the private keys are committed to the repository. For development and the demo only.
#
#   certs/gen-dev-pki.sh [OUTDIR]      (default: certs/dev next to this script)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/dev}
days=3650
mkdir -p "$out"
cd "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# ca NAME CN: self-signed CA
ca() {
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -out "$1.pem" -days "$days" -subj "/O=m2m-auth-proxy dev (INSECURE)/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash"
}

# leaf NAME CA CN EXTENSIONS: certificate signed by CA
leaf() {
  local name=$1 ca=$2 cn=$3 ext=$4
  key "$name.key"
  openssl req -new -key "$name.key" -subj "/O=m2m-auth-proxy dev (INSECURE)/CN=$cn" -out "$tmp/$name.csr"
  printf '%b\n' "$ext" > "$tmp/$name.ext"
  openssl x509 -req -in "$tmp/$name.csr" -CA "$ca.pem" -CAkey "$ca.key" -CAcreateserial -CAserial "$tmp/$ca.srl" \
    -days "$days" -out "$name.pem" -extfile "$tmp/$name.ext" 2>/dev/null
}

client_ext() {
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\nsubjectAltName=%s' "$1"
}

ca ca "m2m-auth-proxy dev CA"
leaf server ca localhost \
  'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1'
# oneM2M originator forms as SAN URIs: an AE-ID, a CSE-ID, and OpenMTC's scheme-less form.
leaf client-Cae-sensor1 ca Cae-sensor1 "$(client_ext URI:Cae-sensor1)"
leaf client-id-mn ca id-mn "$(client_ext URI:/id-mn)"
leaf client-openmtc-ipe ca CTestIPE "$(client_ext URI://openmtc.org/mn-cse-1/CTestIPE)"
# A foreign CA and a client it signed: must always be refused.
ca rogue-ca "rogue CA"
leaf rogue-client rogue-ca Cae-sensor1 "$(client_ext URI:Cae-sensor1)"
rm -f ./*.srl
echo "dev PKI written to $out (INSECURE: private keys are public)"
