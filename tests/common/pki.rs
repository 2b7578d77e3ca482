//! Per-test PKI made with the openssl crate: CAs, intermediates, server and client
//! certificates (including expired, not-yet-valid, wrong-EKU, CA-flagged and self-signed
//! ones, and SAN values that are not URLs or not even valid IA5/UTF-8), CA bundles and CRLs.
//!
//! Every file is PEM in the `Pki`'s temp dir (keys are PKCS#8); the dir lives as long as the
//! `Pki`. Files are written atomically (temp file + rename), so rewriting a file under the
//! same name (`ClientOpts::file`, `CaOpts::file`, `CrlOpts::file`, `Pki::write`) is safe for
//! hot-reload tests.
//!
//! ```ignore
//! let pki = Pki::new();
//! let ca = pki.ca("test-ca");
//! let server = pki.server(&ca, "localhost", &["127.0.0.1"]);
//! let ae = pki.client(&ca, ClientOpts::uri("Cae-sensor1"));
//! let old = pki.client(&ca, ClientOpts::uri("Cae-old").expired());
//! let crl = pki.crl(&ca, &[&old]);
//! ```

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use openssl::asn1::{Asn1Object, Asn1OctetString, Asn1Time, Asn1Type};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::{
    X509Builder, X509CrlBuilder, X509Extension, X509NameBuilder, X509RevokedBuilder, X509,
};
use tempfile::TempDir;

const DAY: i64 = 86_400;
const ORG: &str = "m2m-auth-proxy tests";

/// A certificate with its key, as files and as openssl objects.
#[derive(Clone)]
pub struct CertKey {
    /// This certificate alone, PEM.
    pub cert: PathBuf,
    /// Its private key, PKCS#8 PEM.
    pub key: PathBuf,
    /// This certificate followed by the intermediates that issued it (not the root), PEM:
    /// what a server or client presents. Same content as `cert` when a root issued it.
    pub chain: PathBuf,
    pub x509: X509,
    pub pkey: PKey<Private>,
    /// The intermediates above this certificate, nearest first, without the self-signed root.
    pub issuers: Vec<X509>,
}

impl CertKey {
    /// The certificate as PEM bytes.
    pub fn pem(&self) -> Vec<u8> {
        self.x509.to_pem().expect("cert to PEM")
    }

    /// The private key as PKCS#8 PEM bytes.
    pub fn key_pem(&self) -> Vec<u8> {
        self.pkey.private_key_to_pem_pkcs8().expect("key to PEM")
    }

    /// The serial number, upper-case hex.
    pub fn serial_hex(&self) -> String {
        self.x509
            .serial_number()
            .to_bn()
            .and_then(|b| b.to_hex_str().map(|s| s.to_string()))
            .expect("serial")
    }
}

/// Key algorithm of a generated certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyKind {
    #[default]
    EcP256,
    Rsa2048,
}

/// Extended key usage of a leaf certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Eku {
    /// clientAuth (the default for client certificates).
    #[default]
    ClientAuth,
    /// serverAuth only: must be refused as a client certificate.
    ServerAuthOnly,
    /// serverAuth and clientAuth.
    ServerAndClient,
    /// No EKU extension at all (any purpose).
    None,
}

/// Options for a CA or intermediate certificate.
#[derive(Clone, Debug)]
pub struct CaOpts {
    /// basicConstraints pathLenConstraint.
    pub path_len: Option<u32>,
    /// notBefore as days from now (negative = in the past). Default -1.
    pub not_before_days: i64,
    /// notAfter as days from now (negative = expired). Default +365.
    pub not_after_days: i64,
    pub key: KeyKind,
    /// Base name of the files (`<name>.pem`, `<name>.key`, `<name>.chain.pem`); empty = unique
    /// generated name. Reusing a name overwrites the files.
    pub file_name: String,
}

impl Default for CaOpts {
    fn default() -> Self {
        CaOpts {
            path_len: None,
            not_before_days: -1,
            not_after_days: 365,
            key: KeyKind::EcP256,
            file_name: String::new(),
        }
    }
}

impl CaOpts {
    pub fn expired(mut self) -> Self {
        self.not_before_days = -30;
        self.not_after_days = -1;
        self
    }
    pub fn path_len(mut self, n: u32) -> Self {
        self.path_len = Some(n);
        self
    }
    pub fn file(mut self, name: &str) -> Self {
        self.file_name = name.to_string();
        self
    }
}

/// Options for a leaf certificate (client or server). Build with the constructors and
/// chainable setters, or with struct-update syntax: `ClientOpts { dns: vec![..], ..Default::default() }`.
#[derive(Clone, Debug)]
pub struct ClientOpts {
    /// Subject CN (any UTF-8, any length: it is stored as a raw UTF8String, so 10 KB or
    /// control characters are fine). None = no CN.
    pub cn: Option<String>,
    /// ASN.1 string type of the CN, its bytes those of `cn` as they are (default UTF8String):
    /// `with_cn_as(Asn1Type::BMPSTRING, b"CAdmin")` is the BMPString "䍁摭楮".
    pub cn_type: Option<Asn1Type>,
    /// SAN URIs, stored verbatim as IA5String (need not be URLs or even ASCII).
    pub uris: Vec<String>,
    /// SAN URIs as raw bytes (for invalid UTF-8), after `uris`.
    pub raw_uris: Vec<Vec<u8>>,
    /// SAN DNS names, verbatim.
    pub dns: Vec<String>,
    /// SAN e-mail addresses (rfc822Name), verbatim.
    pub emails: Vec<String>,
    /// SAN IP addresses ("127.0.0.1", "::1").
    pub ips: Vec<String>,
    /// notBefore as days from now (negative = in the past). Default -1.
    pub not_before_days: i64,
    /// notAfter as days from now (negative = expired). Default +30.
    pub not_after_days: i64,
    /// notAfter as seconds from now, instead of `not_after_days` (a certificate that expires
    /// while a test runs).
    pub not_after_secs: Option<i64>,
    pub eku: Eku,
    /// basicConstraints CA:TRUE (with keyCertSign) instead of CA:FALSE.
    pub is_ca: bool,
    pub key: KeyKind,
    /// Base name of the files (`<name>.pem`, `<name>.key`, `<name>.chain.pem`); empty = unique
    /// generated name. Reusing a name overwrites the files.
    pub file_name: String,
}

impl Default for ClientOpts {
    fn default() -> Self {
        ClientOpts {
            cn: None,
            cn_type: None,
            uris: Vec::new(),
            raw_uris: Vec::new(),
            dns: Vec::new(),
            emails: Vec::new(),
            ips: Vec::new(),
            not_before_days: -1,
            not_after_days: 30,
            not_after_secs: None,
            eku: Eku::ClientAuth,
            is_ca: false,
            key: KeyKind::EcP256,
            file_name: String::new(),
        }
    }
}

impl ClientOpts {
    /// Only a SAN URI (no CN).
    pub fn uri(uri: &str) -> Self {
        Self::default().with_uri(uri)
    }
    /// Only a subject CN.
    pub fn cn(cn: &str) -> Self {
        Self::default().with_cn(cn)
    }
    /// Only a SAN DNS name.
    pub fn dns(dns: &str) -> Self {
        Self::default().with_dns(dns)
    }
    /// Only a SAN e-mail.
    pub fn email(email: &str) -> Self {
        Self::default().with_email(email)
    }
    /// A server certificate: CN and SAN DNS `host`, SAN IPs, EKU serverAuth.
    pub fn server(host: &str, ips: &[&str]) -> Self {
        let mut o = Self::default()
            .with_cn(host)
            .with_dns(host)
            .eku(Eku::ServerAuthOnly);
        o.ips = ips.iter().map(|s| s.to_string()).collect();
        o.not_after_days = 365;
        o
    }

    pub fn with_cn(mut self, cn: &str) -> Self {
        self.cn = Some(cn.to_string());
        self
    }
    /// A CN of ASN.1 string type `ty` holding exactly `bytes` (which must be UTF-8 to the
    /// openssl builder: NULs are, so UTF-16 and UTF-32 of ASCII text work).
    pub fn with_cn_as(mut self, ty: Asn1Type, bytes: &[u8]) -> Self {
        self.cn = Some(String::from_utf8(bytes.to_vec()).expect("CN bytes as UTF-8"));
        self.cn_type = Some(ty);
        self
    }
    pub fn with_uri(mut self, uri: &str) -> Self {
        self.uris.push(uri.to_string());
        self
    }
    pub fn with_raw_uri(mut self, uri: &[u8]) -> Self {
        self.raw_uris.push(uri.to_vec());
        self
    }
    pub fn with_dns(mut self, dns: &str) -> Self {
        self.dns.push(dns.to_string());
        self
    }
    pub fn with_email(mut self, email: &str) -> Self {
        self.emails.push(email.to_string());
        self
    }
    pub fn with_ip(mut self, ip: &str) -> Self {
        self.ips.push(ip.to_string());
        self
    }
    /// Validity as days from now, e.g. `(-30, -1)` expired, `(1, 30)` not yet valid.
    pub fn valid_days(mut self, not_before: i64, not_after: i64) -> Self {
        self.not_before_days = not_before;
        self.not_after_days = not_after;
        self
    }
    /// Expired yesterday (valid from 30 days ago).
    pub fn expired(self) -> Self {
        self.valid_days(-30, -1)
    }
    /// Expires `secs` seconds after it is made (`CertKey::x509.not_after()` says when).
    pub fn expires_in_secs(mut self, secs: i64) -> Self {
        self.not_after_secs = Some(secs);
        self
    }
    /// Valid from tomorrow.
    pub fn not_yet_valid(self) -> Self {
        self.valid_days(1, 30)
    }
    pub fn eku(mut self, eku: Eku) -> Self {
        self.eku = eku;
        self
    }
    /// Mark it CA:TRUE.
    pub fn ca(mut self) -> Self {
        self.is_ca = true;
        self
    }
    pub fn rsa(mut self) -> Self {
        self.key = KeyKind::Rsa2048;
        self
    }
    /// Fixed file base name (rewrites the same files when reused).
    pub fn file(mut self, name: &str) -> Self {
        self.file_name = name.to_string();
        self
    }
}

/// Options for a CRL.
#[derive(Clone, Debug)]
pub struct CrlOpts {
    /// thisUpdate as days from now. Default -1.
    pub last_update_days: i64,
    /// nextUpdate as days from now (negative = stale CRL). Default +30.
    pub next_update_days: i64,
    /// cRLNumber; 0 = a per-Pki increasing counter.
    pub number: u64,
    /// File name (`<name>.pem`); empty = unique generated name.
    pub file_name: String,
}

impl Default for CrlOpts {
    fn default() -> Self {
        CrlOpts {
            last_update_days: -1,
            next_update_days: 30,
            number: 0,
            file_name: String::new(),
        }
    }
}

/// The certificate factory; owns the temp dir the files are written to.
pub struct Pki {
    dir: TempDir,
    counter: AtomicU64,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// What a certificate to build looks like (internal).
struct Spec<'a> {
    cn: Option<&'a str>,
    cn_type: Asn1Type,
    sans: Vec<(u8, Vec<u8>)>,
    not_before_days: i64,
    not_after_days: i64,
    not_after_secs: Option<i64>,
    ca: Option<Option<u32>>,
    eku: Eku,
    key: KeyKind,
    base: String,
}

impl Pki {
    pub fn new() -> Pki {
        Pki {
            dir: tempfile::Builder::new()
                .prefix("m2m-pki-")
                .tempdir()
                .expect("create PKI temp dir"),
            counter: AtomicU64::new(1),
        }
    }

    /// The directory holding every file of this PKI.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `dir()/name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `contents` to `dir()/name` atomically (temp file + rename); returns the path.
    pub fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.path(name);
        let tmp = self.path(&format!(".{name}.tmp{}", self.next()));
        fs::write(&tmp, contents).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
        fs::rename(&tmp, &path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
        path
    }

    fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    fn base(&self, kind: &str, hint: &str, file_name: &str) -> String {
        if !file_name.is_empty() {
            return file_name.to_string();
        }
        let clean: String = hint
            .chars()
            .filter(|c| c.is_ascii())
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(32)
            .collect();
        format!("{kind}-{clean}-{}", self.next())
    }

    /// A self-signed root CA (EC P-256, CA:TRUE, keyCertSign/cRLSign), valid -1..+365 days.
    pub fn ca(&self, name: &str) -> CertKey {
        self.ca_with(name, CaOpts::default())
    }

    /// A self-signed root CA with options (e.g. `CaOpts::default().expired()`).
    pub fn ca_with(&self, name: &str, opts: CaOpts) -> CertKey {
        let spec = Spec {
            cn: Some(name),
            cn_type: Asn1Type::UTF8STRING,
            sans: Vec::new(),
            not_before_days: opts.not_before_days,
            not_after_days: opts.not_after_days,
            not_after_secs: None,
            ca: Some(opts.path_len),
            eku: Eku::None,
            key: opts.key,
            base: self.base("ca", name, &opts.file_name),
        };
        self.make(None, spec)
    }

    /// An intermediate CA signed by `parent` (a root or another intermediate).
    pub fn intermediate(&self, parent: &CertKey, name: &str, opts: CaOpts) -> CertKey {
        let spec = Spec {
            cn: Some(name),
            cn_type: Asn1Type::UTF8STRING,
            sans: Vec::new(),
            not_before_days: opts.not_before_days,
            not_after_days: opts.not_after_days,
            not_after_secs: None,
            ca: Some(opts.path_len),
            eku: Eku::None,
            key: opts.key,
            base: self.base("int", name, &opts.file_name),
        };
        self.make(Some(parent), spec)
    }

    /// A server certificate: CN `host`, SAN DNS `host` + the IPs, EKU serverAuth, +365 days.
    pub fn server(&self, ca: &CertKey, host: &str, ips: &[&str]) -> CertKey {
        self.client(ca, ClientOpts::server(host, ips))
    }

    /// A leaf certificate signed by `ca` (client by default; any leaf `opts` describes).
    pub fn client(&self, ca: &CertKey, opts: ClientOpts) -> CertKey {
        let spec = self.leaf_spec(&opts);
        self.make(Some(ca), spec)
    }

    /// A self-signed leaf certificate (not issued by any CA of the PKI).
    pub fn self_signed_client(&self, opts: ClientOpts) -> CertKey {
        let spec = self.leaf_spec(&opts);
        self.make(None, spec)
    }

    fn leaf_spec<'a>(&self, o: &'a ClientOpts) -> Spec<'a> {
        let mut sans = Vec::new();
        sans.extend(o.uris.iter().map(|u| (0x86, u.as_bytes().to_vec())));
        sans.extend(o.raw_uris.iter().map(|u| (0x86, u.clone())));
        sans.extend(o.dns.iter().map(|d| (0x82, d.as_bytes().to_vec())));
        sans.extend(o.emails.iter().map(|e| (0x81, e.as_bytes().to_vec())));
        for ip in &o.ips {
            let ip: IpAddr = ip.parse().unwrap_or_else(|e| panic!("SAN IP {ip:?}: {e}"));
            let bytes = match ip {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            sans.push((0x87, bytes));
        }
        let hint =
            o.cn.clone()
                .or_else(|| o.uris.first().cloned())
                .or_else(|| o.dns.first().cloned())
                .or_else(|| o.emails.first().cloned())
                .unwrap_or_default();
        Spec {
            cn: o.cn.as_deref(),
            cn_type: o.cn_type.unwrap_or(Asn1Type::UTF8STRING),
            sans,
            not_before_days: o.not_before_days,
            not_after_days: o.not_after_days,
            not_after_secs: o.not_after_secs,
            ca: if o.is_ca { Some(None) } else { None },
            eku: o.eku,
            key: o.key,
            base: self.base("leaf", &hint, &o.file_name),
        }
    }

    fn make(&self, issuer: Option<&CertKey>, spec: Spec<'_>) -> CertKey {
        let pkey = gen_key(spec.key);
        let mut name = X509NameBuilder::new().unwrap();
        if let Some(cn) = spec.cn {
            // A raw UTF8String: no ub-common-name length check, any bytes.
            name.append_entry_by_nid_with_type(Nid::COMMONNAME, cn, spec.cn_type)
                .expect("subject CN");
        }
        name.append_entry_by_nid(Nid::ORGANIZATIONNAME, ORG)
            .unwrap();
        let name = name.build();

        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        let mut serial = BigNum::new().unwrap();
        serial.rand(127, MsbOption::MAYBE_ZERO, false).unwrap();
        b.set_serial_number(&serial.to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(issuer.map_or(&*name, |i| i.x509.subject_name()))
            .unwrap();
        b.set_pubkey(&pkey).unwrap();
        b.set_not_before(&time_from_now(spec.not_before_days))
            .unwrap();
        let not_after = match spec.not_after_secs {
            Some(secs) => secs_from_now(secs),
            None => time_from_now(spec.not_after_days),
        };
        b.set_not_after(&not_after).unwrap();

        let mut bc = BasicConstraints::new();
        bc.critical();
        let mut ku = KeyUsage::new();
        ku.critical();
        match spec.ca {
            Some(path_len) => {
                bc.ca();
                if let Some(n) = path_len {
                    bc.pathlen(n);
                }
                ku.key_cert_sign().crl_sign().digital_signature();
            }
            None => {
                ku.digital_signature();
                if spec.key == KeyKind::Rsa2048 {
                    ku.key_encipherment();
                }
            }
        }
        b.append_extension(bc.build().unwrap()).unwrap();
        b.append_extension(ku.build().unwrap()).unwrap();
        let eku = match spec.eku {
            Eku::ClientAuth => Some(ExtendedKeyUsage::new().client_auth().build()),
            Eku::ServerAuthOnly => Some(ExtendedKeyUsage::new().server_auth().build()),
            Eku::ServerAndClient => {
                Some(ExtendedKeyUsage::new().server_auth().client_auth().build())
            }
            Eku::None => None,
        };
        if let Some(eku) = eku {
            b.append_extension(eku.unwrap()).unwrap();
        }
        let ski = SubjectKeyIdentifier::new()
            .build(&b.x509v3_context(issuer.map(|i| &*i.x509), None))
            .unwrap();
        b.append_extension(ski).unwrap();
        if let Some(issuer) = issuer {
            let aki = AuthorityKeyIdentifier::new()
                .keyid(true)
                .build(&b.x509v3_context(Some(&issuer.x509), None))
                .unwrap();
            b.append_extension(aki).unwrap();
        }
        if !spec.sans.is_empty() {
            // Built from DER so that any bytes survive (the openssl builder parses values).
            let mut seq = Vec::new();
            for (tag, value) in &spec.sans {
                seq.extend(der(*tag, value));
            }
            let value = der(0x30, &seq);
            let oid = Asn1Object::from_str("2.5.29.17").unwrap();
            let ext = X509Extension::new_from_der(
                &oid,
                spec.cn.is_none(), // RFC 5280: critical when the subject has no CN
                &Asn1OctetString::new_from_bytes(&value).unwrap(),
            )
            .expect("SAN extension");
            b.append_extension(ext).unwrap();
        }
        let signer = issuer.map_or(&pkey, |i| &i.pkey);
        b.sign(signer, MessageDigest::sha256())
            .expect("sign certificate");
        let x509 = b.build();

        let issuers: Vec<X509> = match issuer {
            None => Vec::new(),
            Some(i) if is_self_signed(&i.x509) => Vec::new(),
            Some(i) => std::iter::once(i.x509.clone())
                .chain(i.issuers.iter().cloned())
                .collect(),
        };
        let key_pem = pkey.private_key_to_pem_pkcs8().unwrap();
        let cert_pem = x509.to_pem().unwrap();
        let mut chain_pem = cert_pem.clone();
        for i in &issuers {
            chain_pem.extend(i.to_pem().unwrap());
        }
        // Key first, then certificate: a reloader that sees the new certificate finds its key.
        let key = self.write(&format!("{}.key", spec.base), &key_pem);
        let cert = self.write(&format!("{}.pem", spec.base), &cert_pem);
        let chain = self.write(&format!("{}.chain.pem", spec.base), &chain_pem);
        CertKey {
            cert,
            key,
            chain,
            x509,
            pkey,
            issuers,
        }
    }

    /// Concatenates the given certificates (each one alone, not its chain) into one PEM file.
    pub fn bundle(&self, certs: &[&CertKey]) -> PathBuf {
        let name = format!("bundle-{}.pem", self.next());
        self.bundle_named(&name, certs)
    }

    /// Like `bundle`, under a fixed file name (rewrites it when reused).
    pub fn bundle_named(&self, name: &str, certs: &[&CertKey]) -> PathBuf {
        let mut pem = Vec::new();
        for c in certs {
            pem.extend(c.pem());
        }
        self.write(name, &pem)
    }

    /// A v2 CRL issued by `ca` revoking `revoked` (thisUpdate -1 day, nextUpdate +30 days).
    pub fn crl(&self, ca: &CertKey, revoked: &[&CertKey]) -> PathBuf {
        self.crl_with(ca, revoked, CrlOpts::default())
    }

    /// A CRL with options (e.g. a stale one with `next_update_days: -1`).
    pub fn crl_with(&self, ca: &CertKey, revoked: &[&CertKey], opts: CrlOpts) -> PathBuf {
        let mut b = X509CrlBuilder::new().unwrap();
        b.set_issuer_name(ca.x509.subject_name()).unwrap();
        b.set_last_update(&time_from_now(opts.last_update_days))
            .unwrap();
        b.set_next_update(&time_from_now(opts.next_update_days))
            .unwrap();
        let keyid = ca
            .x509
            .subject_key_id()
            .expect("CA has a subject key identifier")
            .as_slice();
        let aki = der(0x30, &der(0x80, keyid));
        b.append_extension(
            X509Extension::new_from_der(
                &Asn1Object::from_str("2.5.29.35").unwrap(),
                false,
                &Asn1OctetString::new_from_bytes(&aki).unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        let number = if opts.number == 0 {
            self.next()
        } else {
            opts.number
        };
        b.append_extension(
            X509Extension::new_from_der(
                &Asn1Object::from_str("2.5.29.20").unwrap(),
                false,
                &Asn1OctetString::new_from_bytes(&der_uint(number)).unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        let when = time_from_now(-1);
        for r in revoked {
            let mut rb = X509RevokedBuilder::new().unwrap();
            rb.set_serial_number(r.x509.serial_number()).unwrap();
            rb.set_revocation_date(&when).unwrap();
            b.add_revoked(rb.build()).unwrap();
        }
        b.sort().unwrap();
        b.sign(&ca.pkey, MessageDigest::sha256()).unwrap();
        let crl = b.build().expect("build CRL");
        let name = if opts.file_name.is_empty() {
            format!("crl-{}.pem", self.next())
        } else {
            format!("{}.pem", opts.file_name)
        };
        self.write(&name, &crl.to_pem().unwrap())
    }
}

fn gen_key(kind: KeyKind) -> PKey<Private> {
    match kind {
        KeyKind::EcP256 => {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
            PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
        }
        KeyKind::Rsa2048 => PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap(),
    }
}

fn is_self_signed(x: &X509) -> bool {
    x.subject_name().to_der().ok() == x.issuer_name().to_der().ok()
}

/// Now + `days` days (may be negative).
fn time_from_now(days: i64) -> Asn1Time {
    secs_from_now(days * DAY)
}

/// Now + `secs` seconds (may be negative).
fn secs_from_now(secs: i64) -> Asn1Time {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    Asn1Time::from_unix(now + secs).expect("Asn1Time")
}

/// One DER TLV.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// A DER INTEGER for a non-negative number.
fn der_uint(n: u64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    let mut content = bytes[skip..].to_vec();
    if content[0] & 0x80 != 0 {
        content.insert(0, 0);
    }
    der(0x02, &content)
}
