//! One stored password hash: recognising its format and verifying a password against it.
//!
//! Formats follow Apache's `htpasswd` and `apr_password_validate`: bcrypt, `$apr1$` (and the
//! identical `$1$`) MD5-crypt, `{SHA}`, SHA-256/512-crypt, and plain text. DES crypt(3) is
//! recognised only to be refused: it truncates passwords to 8 characters, and the one crate
//! implementing it (`pwhash`) is unmaintained and pulls in an old RustCrypto stack.

use std::fmt;

use base64::Engine as _;
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use sha_crypt::{Params, PasswordVerifier, ShaCrypt};
use subtle::ConstantTimeEq;

/// The alphabet of crypt(3) encodings (MD5-crypt, SHA-crypt, DES salts).
const CRYPT64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

const SUPPORTED: &str = "expected a supported hash: bcrypt ($2y$, $2a$, $2b$), $apr1$ or $1$ MD5, \
     {SHA}, $5$ or $6$ SHA-crypt; or, with allow_insecure_hashes, plain text (written as \
     {PLAIN}text when it starts with $ or {)";

const DES_REFUSED: &str = "expected a supported hash, found what looks like DES crypt(3), which \
     is refused even with allow_insecure_hashes; re-create the entry with `htpasswd -B` (a 13-character plain-text \
     password must be written as {PLAIN}password)";

/// A parsed htpasswd hash. `Debug` shows the format only.
pub(crate) enum Hash {
    Bcrypt {
        hash: String,
        cost: u32,
    },
    Md5Crypt {
        magic: &'static str,
        salt: String,
        encoded: [u8; 22],
    },
    Sha1 {
        digest: [u8; 20],
    },
    ShaCrypt {
        hash: String,
        sha512: bool,
        rounds: u32,
    },
    /// SHA-256 of the plain-text password: compared without its length or text in memory.
    Plain {
        digest: [u8; 32],
    },
}

/// How much work a verification costs; unknown users are verified against a dummy of the
/// most expensive class (or the configured floor), so that their timing matches a wrong
/// password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Work {
    Bcrypt(u32),
    Md5Crypt,
    Sha1,
    ShaCrypt { sha512: bool, rounds: u32 },
    Plain,
}

impl Hash {
    /// Recognise the hash field of an htpasswd line. The error is an "expected …" message that
    /// never quotes the field.
    pub(crate) fn parse(field: &str) -> Result<Hash, &'static str> {
        if let Some(b64) = field.strip_prefix("{SHA}") {
            return parse_sha1(b64);
        }
        if let Some(plain) = field.strip_prefix("{PLAIN}") {
            return Ok(Hash::plain(plain.as_bytes()));
        }
        if let Some(rest) = field.strip_prefix('$') {
            return match rest.split('$').next() {
                Some("2a" | "2b" | "2y") => parse_bcrypt(field),
                Some("apr1") => parse_md5_crypt(field, "$apr1$"),
                Some("1") => parse_md5_crypt(field, "$1$"),
                Some("5") => parse_sha_crypt(field, false),
                Some("6") => parse_sha_crypt(field, true),
                _ => Err(SUPPORTED),
            };
        }
        if field.len() == 13 && field.bytes().all(|b| CRYPT64.contains(&b)) {
            return Err(DES_REFUSED);
        }
        if looks_like_scheme(field) {
            return Err(SUPPORTED);
        }
        // Apache's `htpasswd -p` writes the password as is.
        Ok(Hash::plain(field.as_bytes()))
    }

    fn plain(password: &[u8]) -> Hash {
        Hash::Plain {
            digest: Sha256::digest(password).into(),
        }
    }

    pub(crate) fn is_insecure(&self) -> bool {
        matches!(self, Hash::Plain { .. })
    }

    pub(crate) fn work(&self) -> Work {
        match self {
            Hash::Bcrypt { cost, .. } => Work::Bcrypt(*cost),
            Hash::Md5Crypt { .. } => Work::Md5Crypt,
            Hash::Sha1 { .. } => Work::Sha1,
            Hash::ShaCrypt { sha512, rounds, .. } => Work::ShaCrypt {
                sha512: *sha512,
                rounds: *rounds,
            },
            Hash::Plain { .. } => Work::Plain,
        }
    }

    pub(crate) fn verify(&self, password: &[u8]) -> bool {
        #[cfg(test)]
        tests::record(self.work());
        match self {
            // bcrypt truncates at 72 bytes, as Apache does.
            Hash::Bcrypt { hash, .. } => bcrypt::verify(password, hash).unwrap_or(false),
            Hash::Md5Crypt {
                magic,
                salt,
                encoded,
            } => md5_crypt(password, magic, salt.as_bytes())
                .ct_eq(encoded)
                .into(),
            Hash::Sha1 { digest } => Sha1::digest(password).as_slice().ct_eq(digest).into(),
            Hash::ShaCrypt { hash, .. } => ShaCrypt::default()
                .verify_password(password, hash.as_str())
                .is_ok(),
            Hash::Plain { digest } => Sha256::digest(password).as_slice().ct_eq(digest).into(),
        }
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({:?})", self.work())
    }
}

impl Work {
    /// Estimated cost of one verification, in nanoseconds of one core (rough; only the order
    /// between classes matters): bcrypt cost 10 ~60 ms, apr1 ~0.25 ms, SHA-crypt ~0.5-0.7 µs per
    /// round, SHA-1 and plain text ~1 µs.
    pub(crate) fn cost(self) -> u64 {
        match self {
            Work::Bcrypt(cost) => (1u64 << cost.min(31)) * 60_000,
            Work::Md5Crypt => 250_000,
            Work::ShaCrypt { sha512, rounds } => u64::from(rounds) * if sha512 { 700 } else { 500 },
            Work::Sha1 | Work::Plain => 1_000,
        }
    }

    /// A well-formed hash of this class that costs the same to verify and matches nothing
    /// anyone can type (its digest is all zero bits).
    pub(crate) fn dummy(self) -> Hash {
        match self {
            Work::Bcrypt(cost) => Hash::Bcrypt {
                hash: format!("$2y${cost:02}${}", ".".repeat(53)),
                cost,
            },
            Work::Md5Crypt => Hash::Md5Crypt {
                magic: "$apr1$",
                salt: "dummysal".to_owned(),
                encoded: [b'.'; 22],
            },
            Work::Sha1 => Hash::Sha1 { digest: [0; 20] },
            Work::ShaCrypt { sha512, rounds } => {
                let (id, len) = if sha512 { ("6", 86) } else { ("5", 43) };
                Hash::ShaCrypt {
                    hash: format!("${id}$rounds={rounds}$dummysaltdummysa${}", ".".repeat(len)),
                    sha512,
                    rounds,
                }
            }
            Work::Plain => Hash::Plain { digest: [0; 32] },
        }
    }
}

/// `{SCHEME}` prefixes such as nginx's `{SSHA}`: refused rather than taken as plain text.
fn looks_like_scheme(field: &str) -> bool {
    let Some(rest) = field.strip_prefix('{') else {
        return false;
    };
    rest.split_once('}').is_some_and(|(name, _)| {
        !name.is_empty()
            && name.len() <= 16
            && name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
    })
}

fn is_crypt64(s: &str) -> bool {
    s.bytes().all(|b| CRYPT64.contains(&b))
}

fn parse_sha1(b64: &str) -> Result<Hash, &'static str> {
    const EXPECTED: &str = "expected {SHA} followed by the base64 of a 20-byte SHA-1 digest";
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| EXPECTED)?;
    let digest = <[u8; 20]>::try_from(bytes.as_slice()).map_err(|_| EXPECTED)?;
    Ok(Hash::Sha1 { digest })
}

fn parse_bcrypt(field: &str) -> Result<Hash, &'static str> {
    let parts: bcrypt::HashParts = field
        .parse()
        .map_err(|_| "expected a bcrypt hash of 60 characters ($2y$NN$ + 53 characters)")?;
    let cost = parts.get_cost();
    if !(4..=31).contains(&cost) {
        return Err("expected a bcrypt cost between 04 and 31");
    }
    Ok(Hash::Bcrypt {
        hash: field.to_owned(),
        cost,
    })
}

fn parse_md5_crypt(field: &str, magic: &'static str) -> Result<Hash, &'static str> {
    const EXPECTED: &str =
        "expected an MD5-crypt hash: $apr1$ (or $1$), a salt of 1 to 8 characters, $, 22 characters";
    let rest = field.strip_prefix(magic).ok_or(EXPECTED)?;
    let (salt, encoded) = rest.split_once('$').ok_or(EXPECTED)?;
    let salt_ok = (1..=8).contains(&salt.len()) && salt.bytes().all(|b| b.is_ascii_graphic());
    let encoded: [u8; 22] = encoded.as_bytes().try_into().map_err(|_| EXPECTED)?;
    if !salt_ok || !encoded.iter().all(|b| CRYPT64.contains(b)) {
        return Err(EXPECTED);
    }
    Ok(Hash::Md5Crypt {
        magic,
        salt: salt.to_owned(),
        encoded,
    })
}

fn parse_sha_crypt(field: &str, sha512: bool) -> Result<Hash, &'static str> {
    const EXPECTED: &str = "expected a SHA-crypt hash: $5$ or $6$, optionally rounds=N$, a salt \
         of 1 to 16 characters, $, 43 ($5$) or 86 ($6$) characters";
    let (prefix, len) = if sha512 { ("$6$", 86) } else { ("$5$", 43) };
    let rest = field.strip_prefix(prefix).ok_or(EXPECTED)?;
    let (rounds, rest) = match rest.strip_prefix("rounds=") {
        Some(r) => {
            let (n, rest) = r.split_once('$').ok_or(EXPECTED)?;
            let n: u32 = n.parse().map_err(|_| EXPECTED)?;
            Params::new(n).map_err(|_| "expected SHA-crypt rounds between 1000 and 999999999")?;
            (n, rest)
        }
        None => (Params::RECOMMENDED_ROUNDS, rest),
    };
    let (salt, digest) = rest.split_once('$').ok_or(EXPECTED)?;
    let well_formed = (1..=16).contains(&salt.len())
        && is_crypt64(salt)
        && digest.len() == len
        && is_crypt64(digest)
        && sha_crypt::PasswordHashRef::new(field).is_ok();
    if !well_formed {
        return Err(EXPECTED);
    }
    Ok(Hash::ShaCrypt {
        hash: field.to_owned(),
        sha512,
        rounds,
    })
}

/// MD5-crypt as in FreeBSD's crypt and Apache's `apr_md5_encode` (same algorithm, the magic
/// string differs): returns the 22-character encoded digest.
fn md5_crypt(password: &[u8], magic: &str, salt: &[u8]) -> [u8; 22] {
    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(magic.as_bytes());
    ctx.update(salt);

    let alt: [u8; 16] = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize()
        .into();
    for chunk in password.chunks(16) {
        ctx.update(&alt[..chunk.len()]);
    }
    let mut i = password.len();
    while i != 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut fin: [u8; 16] = ctx.finalize().into();

    // 1000 rounds, deliberately slow (by 1990s standards)
    for round in 0..1000 {
        let mut ctx = Md5::new();
        if round & 1 == 1 {
            ctx.update(password);
        } else {
            ctx.update(fin);
        }
        if round % 3 != 0 {
            ctx.update(salt);
        }
        if round % 7 != 0 {
            ctx.update(password);
        }
        if round & 1 == 1 {
            ctx.update(fin);
        } else {
            ctx.update(password);
        }
        fin = ctx.finalize().into();
    }

    let mut out = [0u8; 22];
    let groups = [
        (fin[0], fin[6], fin[12]),
        (fin[1], fin[7], fin[13]),
        (fin[2], fin[8], fin[14]),
        (fin[3], fin[9], fin[15]),
        (fin[4], fin[10], fin[5]),
    ];
    for (n, (a, b, c)) in groups.into_iter().enumerate() {
        let v = (u32::from(a) << 16) | (u32::from(b) << 8) | u32::from(c);
        to64(&mut out[n * 4..n * 4 + 4], v);
    }
    to64(&mut out[20..22], u32::from(fin[11]));
    out
}

/// crypt(3)'s base64: least significant 6 bits first.
fn to64(out: &mut [u8], mut v: u32) {
    for o in out {
        *o = CRYPT64[(v & 0x3f) as usize];
        v >>= 6;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::RefCell;

    use super::*;

    thread_local! {
        static VERIFIED: RefCell<Vec<Work>> = const { RefCell::new(Vec::new()) };
    }

    /// Every verification run on this thread is recorded, so tests can see the unknown-user
    /// path really does the work.
    pub(crate) fn record(work: Work) {
        VERIFIED.with(|v| v.borrow_mut().push(work));
    }

    pub(crate) fn take_verified() -> Vec<Work> {
        VERIFIED.with(|v| std::mem::take(&mut *v.borrow_mut()))
    }

    /// (hash field, its password) — made with apache2-utils `htpasswd` and `openssl passwd`.
    pub(crate) const FIXTURES: &[(&str, &str)] = &[
        // htpasswd -nbB alice 'correct horse'
        ("$2y$05$PwPQThxF5DSff5V12f2WG.5LchoKSqzL9aE5UiMMj2mPZW7ZoAgMO", "correct horse"),
        // htpasswd -nbB -C 10 bob10 'battery staple'
        ("$2y$10$9IqTRnee0gjABanKNqzlKOF4uxvlyXOlr3IzaAzyiM9r4dSv/jNau", "battery staple"),
        // htpasswd -nbm carol 'md5 pässword'
        ("$apr1$uGMu5xMJ$2SsbLHSxUzIfOxf0hKc0S/", "md5 pässword"),
        // htpasswd -nbm ivan ''
        ("$apr1$9z1506eN$hNYOMmHr3bGIukoX93T051", ""),
        // openssl passwd -apr1 -salt 'x/y.Z9' 'short salt'
        ("$apr1$x/y.Z9$y2IffpX.dmmBtxDYngg/K.", "short salt"),
        // openssl passwd -1 -salt abcdefgh 'md5crypt pw'
        ("$1$abcdefgh$YyQMFGactPYIKOtGp8ac91", "md5crypt pw"),
        // htpasswd -nbs dave 'sha1-secret'
        ("{SHA}F/WZ9PxtuIpP2yyadrWdU4eK0og=", "sha1-secret"),
        // htpasswd -nb2 erin 'sha256 secret'
        ("$5$NPsom/cZNUaf2SNq$olbN8/yNYqAr2tynNUDIXzioEpaEIauqNw7VTpRubP/", "sha256 secret"),
        // htpasswd -nb2 -r 1000 erin1k 'sha256 secret'
        (
            "$5$rounds=1000$4XyYuvU2AIt4vbCn$c8EKzw..cXABhLm.MTjvufoM2jsQmD7h5gGXCudNk52",
            "sha256 secret",
        ),
        // htpasswd -nb5 frank 'sha512 secret'
        (
            "$6$79d0L42bHlq.oIus$foDexO5RPvB9PDq/rDNFrgImG9ZSZfTGunntzt8Njyo6rQrhBlIDB46elwbyCuUi.sQ97mKQsFECbwwWtveKk/",
            "sha512 secret",
        ),
        // htpasswd -nb5 -r 12345 frankr 'sha512 secret'
        (
            "$6$rounds=12345$mSCCbRPDmjjobQNY$39QFPtYP5kNf82BhxFX2oyEcoLDB5rCXDYFaBtgT26R1EDDpunkwczuNmFZEWMbaIdvScr4NgeR2L45oKv9MI1",
            "sha512 secret",
        ),
        // openssl passwd -6 -salt 'saltstring' 'Hello world!'
        (
            "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
            "Hello world!",
        ),
        // htpasswd -nbp gina 'plain text pw'
        ("plain text pw", "plain text pw"),
        ("{PLAIN}nginx style", "nginx style"),
    ];

    #[test]
    fn every_format_verifies_right_and_refuses_wrong_passwords() {
        for (field, password) in FIXTURES {
            let hash = Hash::parse(field).unwrap_or_else(|e| panic!("{field}: {e}"));
            assert!(hash.verify(password.as_bytes()), "{field}");
            assert!(!hash.verify(b"wrong"), "{field}");
            let mut longer = password.as_bytes().to_vec();
            longer.push(b'x');
            assert!(!hash.verify(&longer), "{field}");
        }
    }

    #[test]
    fn classifies_formats() {
        let work = |f: &str| Hash::parse(f).map(|h| h.work());
        assert_eq!(work(FIXTURES[0].0), Ok(Work::Bcrypt(5)));
        assert_eq!(work(FIXTURES[1].0), Ok(Work::Bcrypt(10)));
        assert_eq!(work(FIXTURES[2].0), Ok(Work::Md5Crypt));
        assert_eq!(work(FIXTURES[6].0), Ok(Work::Sha1));
        assert_eq!(
            work(FIXTURES[7].0),
            Ok(Work::ShaCrypt {
                sha512: false,
                rounds: 5000
            })
        );
        assert_eq!(
            work(FIXTURES[10].0),
            Ok(Work::ShaCrypt {
                sha512: true,
                rounds: 12345
            })
        );
        assert_eq!(work("plain text pw"), Ok(Work::Plain));
        assert!(Hash::parse("{PLAIN}x").is_ok_and(|h| h.is_insecure()));
        assert!(Hash::parse(FIXTURES[0].0).is_ok_and(|h| !h.is_insecure()));
    }

    #[test]
    fn bcrypt_2a_and_2b_prefixes_verify() {
        let y = FIXTURES[0].0;
        for prefix in ["$2a$", "$2b$"] {
            let field = format!("{prefix}{}", &y[4..]);
            let hash = Hash::parse(&field).expect("valid");
            assert!(hash.verify(b"correct horse"));
            assert!(!hash.verify(b"correct horsE"));
        }
    }

    #[test]
    fn des_and_unknown_schemes_are_refused() {
        // htpasswd -nbd hank 'descrypt'
        assert_eq!(Hash::parse("M3h2o80T0cVjY").err(), Some(DES_REFUSED));
        for field in [
            "$2x$05$PwPQThxF5DSff5V12f2WG.5LchoKSqzL9aE5UiMMj2mPZW7ZoAgMO",
            "$y$j9T$abc$def",
            "$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA",
            "$",
            "{SSHA}abcdefgh",
            "{MD5}abc",
        ] {
            assert_eq!(Hash::parse(field).err(), Some(SUPPORTED), "{field}");
        }
        // braces that are no scheme name are plain text
        assert!(Hash::parse("{not a scheme}").is_ok_and(|h| h.is_insecure()));
    }

    #[test]
    fn malformed_hashes_are_refused() {
        for field in [
            "$2y$05$PwPQThxF5DSff5V12f2WG.5LchoKSqzL9aE5UiMMj2mPZW7ZoAgM",
            "$2y$99$PwPQThxF5DSff5V12f2WG.5LchoKSqzL9aE5UiMMj2mPZW7ZoAgMO",
            "$2y$03$PwPQThxF5DSff5V12f2WG.5LchoKSqzL9aE5UiMMj2mPZW7ZoAgMO",
            "$apr1$uGMu5xMJ$2SsbLHSxUzIfOxf0hKc0S",
            "$apr1$$2SsbLHSxUzIfOxf0hKc0S/",
            "$apr1$toolongsalt$2SsbLHSxUzIfOxf0hKc0S/",
            "$apr1$uGMu5xMJ2SsbLHSxUzIfOxf0hKc0S/",
            "{SHA}F/WZ9PxtuIpP2yyadrWdU4eK0og",
            "{SHA}AAAA",
            "$5$NPsom/cZNUaf2SNq$olbN8/yNYqAr2tynNUDIXzioEpaEIauqNw7VTpRubP",
            "$5$rounds=999$4XyYuvU2AIt4vbCn$c8EKzw..cXABhLm.MTjvufoM2jsQmD7h5gGXCudNk52",
            "$5$rounds=x$4XyYuvU2AIt4vbCn$c8EKzw..cXABhLm.MTjvufoM2jsQmD7h5gGXCudNk52",
            "$6$NPsom/cZNUaf2SNq$olbN8/yNYqAr2tynNUDIXzioEpaEIauqNw7VTpRubP/",
            "$6$$foDexO5RPvB9PDq/rDNFrgImG9ZSZfTGunntzt8Njyo6rQrhBlIDB46elwbyCuUi.sQ97mKQsFECbwwWtveKk/",
        ] {
            assert!(Hash::parse(field).is_err(), "{field}");
        }
    }

    #[test]
    fn dummies_are_well_formed_do_the_work_and_match_nothing() {
        let classes = [
            Work::Bcrypt(4),
            Work::Bcrypt(10),
            Work::Md5Crypt,
            Work::Sha1,
            Work::ShaCrypt {
                sha512: false,
                rounds: 1000,
            },
            Work::ShaCrypt {
                sha512: true,
                rounds: 5000,
            },
            Work::Plain,
        ];
        for work in classes {
            let dummy = work.dummy();
            assert_eq!(dummy.work(), work);
            if let Hash::Bcrypt { hash, .. } | Hash::ShaCrypt { hash, .. } = &dummy {
                let reparsed = Hash::parse(hash).unwrap_or_else(|e| panic!("{hash}: {e}"));
                assert_eq!(reparsed.work(), work);
            }
            take_verified();
            assert!(!dummy.verify(b""));
            assert!(!dummy.verify(b"password"));
            assert_eq!(take_verified(), vec![work, work]);
        }
    }

    #[test]
    fn bcrypt_dummy_really_runs_bcrypt() {
        // bcrypt refuses malformed hashes instantly; a dummy it accepted must take as long as a
        // real verification of the same cost.
        let Hash::Bcrypt { hash, .. } = Work::Bcrypt(5).dummy() else {
            panic!("bcrypt dummy expected");
        };
        assert_eq!(bcrypt::verify(b"x", &hash).ok(), Some(false));
    }

    #[test]
    fn debug_shows_no_hash() {
        let hash = Hash::parse(FIXTURES[2].0).expect("valid");
        let shown = format!("{hash:?}");
        assert_eq!(shown, "Hash(Md5Crypt)");
        let plain = format!("{:?}", Hash::parse("hunter2").expect("valid"));
        assert!(!plain.contains("hunter2"));
    }
}
