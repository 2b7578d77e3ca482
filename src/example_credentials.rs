//! The credentials this project publishes as examples: the development PKI of `certs/dev/`
//! (its private keys are in the repository) with its htpasswd user and token, and the example
//! Secret of `deploy/kubernetes/base` (its password and token are printed in its comments).
//! Anyone can use them, so wherever they would prove or grant something (the server
//! certificate, client CA bundles, egress client certificates and CAs, htpasswd, the tokens
//! file) they are refused, at start and on reload, unless the process runs as `demo` or the
//! config says `allow_example_credentials: true`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use openssl::x509::X509Ref;

use crate::credentials::htpasswd::HtpasswdFile;
use crate::credentials::tokens::{TokenFile, TokenLookup};

static ALLOWED: AtomicBool = AtomicBool::new(false);

/// Accept the published examples from now on (`demo`, `allow_example_credentials: true`).
pub fn allow() {
    ALLOWED.store(true, Ordering::Relaxed);
}

fn allowed() -> bool {
    ALLOWED.load(Ordering::Relaxed)
}

/// SHA-256 of the SubjectPublicKeyInfo of each certificate in `certs/dev/` (whose private
/// keys are published), hex. A unit test recomputes them from the files.
const DEV_KEYS: [(&str, &str); 7] = [
    (
        "certs/dev/ca.pem",
        "1b825e194057c7a1d35f530df7baa2928bf336db4e52a491480bdd610436c08e",
    ),
    (
        "certs/dev/server.pem",
        "1794762d3bd16388d0aeac67295a096db69aea410db808d989a2c0386262c3db",
    ),
    (
        "certs/dev/client-Cae-sensor1.pem",
        "8c3e2cb565c44e9e7dad70bd114a89231eb9f77a4e9f700e24a36490283314f3",
    ),
    (
        "certs/dev/client-id-mn.pem",
        "79efa177e7c22225a2cbb7b5b5e43300014925c52a085d71a0dfef094302705d",
    ),
    (
        "certs/dev/client-openmtc-ipe.pem",
        "2c5d850c5ec644e6a7fe09acb19cda7abb208eb308a664480b1e5458540a5730",
    ),
    (
        "certs/dev/rogue-ca.pem",
        "fdddf76849aa0cabcbcf12713ce1fc77daac66df2cf9a7484301fad509d28bd0",
    ),
    (
        "certs/dev/rogue-client.pem",
        "ac2093c67ebf4311824d2427de08a61cd5ae7225ca98da71acd087004c03a67f",
    ),
];

/// Published Bearer tokens, and where.
const TOKENS: [(&str, &str); 2] = [
    ("demo-token-INSECURE", "certs/dev/tokens.yaml"),
    (
        "m2m-example-token-NOT-A-SECRET-change-me",
        "deploy/kubernetes/base/example-credentials/tokens.yaml",
    ),
];

/// Published user names with their passwords, and where.
const PASSWORDS: [(&str, &str, &str); 2] = [
    ("Cae-basic1", "demo-password", "certs/dev/htpasswd"),
    (
        "example",
        "example-password-change-me",
        "deploy/kubernetes/base/example-credentials/htpasswd",
    ),
];

/// What to say after a refusal.
const ESCAPE: &str =
    "only for a trial: `m2m-auth-proxy demo`, or allow_example_credentials: true in the config";

/// The published example whose key `cert` has, if any.
fn published_key(cert: &X509Ref) -> Option<&'static str> {
    let spki = cert.public_key().ok()?.public_key_to_der().ok()?;
    let fingerprint = hex::encode(openssl::sha::sha256(&spki));
    DEV_KEYS
        .iter()
        .find(|(_, known)| *known == fingerprint)
        .map(|(file, _)| *file)
}

/// Refuses `certs` (read from `file`) when one has a published key. `replace` says what to
/// use instead. (The caller's error names the config key.)
pub fn check_certs<'a>(
    file: &Path,
    certs: impl IntoIterator<Item = &'a X509Ref>,
    replace: &str,
) -> Result<(), String> {
    if allowed() {
        return Ok(());
    }
    match certs.into_iter().find_map(published_key) {
        Some(example) => Err(format!(
            "{} holds the published example certificate {example}, whose private key is in the m2m-auth-proxy repository: anyone can use it. Replace it with {replace} ({ESCAPE})",
            file.display()
        )),
        None => Ok(()),
    }
}

/// Refuses an htpasswd file in which a published user name has its published password.
pub fn check_htpasswd(file: &Path, users: &HtpasswdFile) -> Result<(), String> {
    if allowed() {
        return Ok(());
    }
    match PASSWORDS
        .iter()
        // only users that are there: a verification for an absent one costs a dummy hash
        .find(|(user, password, _)| {
            users.entry_fingerprint(user).is_some() && users.verify(user, password.as_bytes())
        })
    {
        Some((user, _, example)) => Err(format!(
            "{}: user {user:?} has the password published in {example}: anyone can log in as it. Set a password of your own (m2m-auth-proxy passwd {user}) ({ESCAPE})",
            file.display()
        )),
        None => Ok(()),
    }
}

/// Refuses a tokens file that lists a published token.
pub fn check_tokens(file: &Path, tokens: &TokenFile) -> Result<(), String> {
    if allowed() {
        return Ok(());
    }
    let listed = |token: &str| {
        !matches!(
            tokens.lookup(token.as_bytes(), SystemTime::now()),
            TokenLookup::Unknown
        )
    };
    match TOKENS.iter().find(|(token, _)| listed(token)) {
        Some((_, example)) => Err(format!(
            "{} lists the token published in {example}: anyone can use it. Make tokens of your own (m2m-auth-proxy token NAME --originator ORIGINATOR) ({ESCAPE})",
            file.display()
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::x509::X509;

    fn repo(file: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(file)
    }

    /// The fingerprints are those of the files: regenerating `certs/dev` needs new ones here.
    #[test]
    fn every_dev_certificate_is_known() {
        let mut found = 0;
        for entry in std::fs::read_dir(repo("certs/dev")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("pem") {
                continue;
            }
            let cert = X509::from_pem(&std::fs::read(&path).unwrap()).unwrap();
            let name = format!("certs/dev/{}", path.file_name().unwrap().to_string_lossy());
            assert_eq!(published_key(&cert), Some(name.as_str()), "{name}");
            found += 1;
        }
        assert_eq!(found, DEV_KEYS.len());
    }

    #[test]
    fn the_published_tokens_and_passwords_are_those_of_the_files() {
        for (_, file) in TOKENS {
            let path = repo(file);
            let tokens = TokenFile::parse(&path, &std::fs::read_to_string(&path).unwrap()).unwrap();
            assert!(check_tokens(&path, &tokens).is_err(), "{file}");
        }
        for (_, _, file) in PASSWORDS {
            let path = repo(file);
            let users = HtpasswdFile::parse(&path, &std::fs::read_to_string(&path).unwrap(), false)
                .unwrap();
            let err = check_htpasswd(&path, &users).unwrap_err();
            assert!(err.contains("m2m-auth-proxy passwd"), "{err}");
        }
    }
}
