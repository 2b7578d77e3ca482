//! The htpasswd file as Apache's `htpasswd` tool writes it: one `user:hash` per line.
//!
//! Read like Apache's `mod_authn_file` does: lines are trimmed, `#` starts a comment line, and
//! the hash ends at the next `:` (anything after it is ignored). Every parse builds a fresh
//! snapshot; the caller swaps whole snapshots on reload.

use std::collections::{hash_map, HashMap};
use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::hashes::{Hash, Work};
use super::CredentialError;

/// The timing floor of a file without entries.
const DEFAULT_FLOOR: Work = Work::Bcrypt(10);

/// Cost of the bcrypt hashes [`htpasswd_line`] writes (Apache's `htpasswd -B` default is 5).
pub const BCRYPT_COST: u32 = 10;

pub struct HtpasswdFile {
    entries: HashMap<String, Entry>,
    insecure: usize,
    /// What every check costs at least: unknown users are verified against this dummy, and
    /// users whose own hash is cheaper verify it too, so that neither is told apart by timing.
    floor: Hash,
    /// The floor was configured (`auth.basic.timing_floor`), not the file's most expensive hash.
    floor_configured: bool,
}

struct Entry {
    hash: Hash,
    fingerprint: u64,
    line: usize,
}

impl Default for HtpasswdFile {
    /// No users: every check fails (the state before the first load).
    fn default() -> Self {
        HtpasswdFile {
            entries: HashMap::new(),
            insecure: 0,
            floor: DEFAULT_FLOOR.dummy(),
            floor_configured: false,
        }
    }
}

impl HtpasswdFile {
    /// Parse the file's content; `source` only names the file in errors.
    pub fn parse(
        source: &Path,
        content: &str,
        allow_insecure: bool,
    ) -> Result<Self, CredentialError> {
        let mut entries: HashMap<String, Entry> = HashMap::new();
        let mut insecure = 0;
        for (index, raw) in content.lines().enumerate() {
            let line = index + 1;
            let error = |message: String| CredentialError::HtpasswdLine {
                path: source.to_owned(),
                line,
                message,
            };
            // trim() also drops a trailing '\r' and whitespace-only lines
            let text = raw.trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            // Never quote the line: without a ':' it may well be a password.
            let (user, rest) = text
                .split_once(':')
                .ok_or_else(|| error("expected user:hash, found no ':'".into()))?;
            if user.is_empty() {
                return Err(error("expected a user name before ':'".into()));
            }
            let field = rest.split_once(':').map_or(rest, |(hash, _comment)| hash);
            if field.trim().is_empty() {
                return Err(error("expected a hash after ':'".into()));
            }
            let hash = Hash::parse(field).map_err(|m| error(m.into()))?;
            if hash.is_insecure() {
                if !allow_insecure {
                    return Err(error(
                        "expected a hashed password, found plain text (re-create the entry with \
                         `htpasswd -B`, or set allow_insecure_hashes: true)"
                            .into(),
                    ));
                }
                insecure += 1;
            }
            match entries.entry(user.to_owned()) {
                hash_map::Entry::Occupied(first) => {
                    return Err(error(format!(
                        "expected each user once, found {user:?} again (first on line {})",
                        first.get().line
                    )));
                }
                hash_map::Entry::Vacant(slot) => {
                    slot.insert(Entry {
                        hash,
                        fingerprint: fingerprint(field),
                        line,
                    });
                }
            }
        }
        let floor = most_expensive_work(&entries).dummy();
        Ok(HtpasswdFile {
            entries,
            insecure,
            floor,
            floor_configured: false,
        })
    }

    /// Use a bcrypt check of `cost` as the floor instead of the file's most expensive hash
    /// (`auth.basic.timing_floor`).
    pub fn with_timing_floor(mut self, bcrypt_cost: Option<u32>) -> Self {
        if let Some(cost) = bcrypt_cost {
            self.floor = Work::Bcrypt(cost).dummy();
            self.floor_configured = true;
        }
        self
    }

    /// What every check costs at least, for `check`: "bcrypt cost 12 (configured)".
    pub fn timing_floor(&self) -> String {
        let work = match self.floor.work() {
            Work::Bcrypt(cost) => format!("bcrypt cost {cost}"),
            Work::Md5Crypt => "MD5-crypt".to_owned(),
            Work::ShaCrypt { sha512, rounds } => {
                format!(
                    "SHA-{}-crypt, {rounds} rounds",
                    if sha512 { 512 } else { 256 }
                )
            }
            Work::Sha1 => "SHA-1".to_owned(),
            Work::Plain => "plain text".to_owned(),
        };
        let why = match self.floor_configured {
            true => "configured",
            false => "the most expensive hash in the file",
        };
        format!("{work} ({why})")
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries accepted only because of `allow_insecure_hashes` (plain text), for a warning.
    pub fn insecure_entries(&self) -> usize {
        self.insecure
    }

    /// Check a password. Every check costs at least the floor (a dummy verification of the
    /// file's most expensive hash, or of `auth.basic.timing_floor`): an unknown user costs the
    /// floor, a user whose hash is cheaper costs its hash plus the floor, so user names cannot
    /// be probed by timing (docs/security-model.md says what remains).
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.entries.get(user) {
            Some(entry) => {
                let ok = entry.hash.verify(password);
                if entry.hash.work().cost() < self.floor.work().cost() {
                    std::hint::black_box(self.floor.verify(password));
                }
                ok
            }
            None => {
                std::hint::black_box(self.floor.verify(password));
                false
            }
        }
    }

    /// A digest of the user's stored hash: changes whenever the entry does.
    pub fn entry_fingerprint(&self, user: &str) -> Option<u64> {
        self.entries.get(user).map(|e| e.fingerprint)
    }
}

impl fmt::Debug for HtpasswdFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HtpasswdFile")
            .field("users", &self.entries.len())
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

fn fingerprint(field: &str) -> u64 {
    let digest = Sha256::digest(field.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The most expensive (format, cost) among the entries; ties of cost go to the greater class
/// so the choice does not depend on hash-map order.
fn most_expensive_work(entries: &HashMap<String, Entry>) -> Work {
    entries
        .values()
        .map(|e| e.hash.work())
        .max_by_key(|work| (work.cost(), *work))
        .unwrap_or(DEFAULT_FLOOR)
}

/// One htpasswd line `user:$2y$10$…` for the operator tool (bcrypt, cost [`BCRYPT_COST`]).
pub fn htpasswd_line(user: &str, password: &[u8]) -> Result<String, CredentialError> {
    let bad_user = |message: &str| CredentialError::InvalidInput {
        what: "user name",
        message: message.to_owned(),
    };
    let bad_password = |message: String| CredentialError::InvalidInput {
        what: "password",
        message,
    };
    if user.is_empty() {
        return Err(bad_user("expected a non-empty name"));
    }
    if user.contains(':') {
        return Err(bad_user("expected no ':' (it ends the name in the file)"));
    }
    if user.chars().any(char::is_control) {
        return Err(bad_user("expected no control characters"));
    }
    // Such a line would be read back as a comment or as a different name.
    if user.starts_with('#') || user.trim() != user {
        return Err(bad_user(
            "expected no leading '#' and no leading or trailing spaces",
        ));
    }
    if password.is_empty() {
        return Err(bad_password("expected a non-empty password".into()));
    }
    // Refuse rather than silently ignore what bcrypt cannot use.
    let parts =
        bcrypt::non_truncating_hash_with_result(password, BCRYPT_COST).map_err(|e| match e {
            bcrypt::BcryptError::Truncation(_) => {
                bad_password("expected at most 72 bytes (bcrypt ignores the rest)".into())
            }
            other => bad_password(format!("cannot hash: {other}")),
        })?;
    Ok(format!(
        "{user}:{}",
        parts.format_for_version(bcrypt::Version::TwoY)
    ))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::hashes::tests::{take_verified, FIXTURES};
    use super::*;

    fn path() -> PathBuf {
        PathBuf::from("/etc/proxy/htpasswd")
    }

    fn parse(content: &str, allow_insecure: bool) -> Result<HtpasswdFile, CredentialError> {
        HtpasswdFile::parse(&path(), content, allow_insecure)
    }

    /// The line number and message of a parse error, checked to quote no secret.
    fn line_error(content: &str, allow_insecure: bool, secrets: &[&str]) -> (usize, String) {
        let err = parse(content, allow_insecure).expect_err("should be refused");
        let shown = err.to_string();
        for secret in secrets {
            assert!(!shown.contains(secret), "{shown:?} reveals {secret:?}");
        }
        assert!(shown.starts_with("/etc/proxy/htpasswd:"), "{shown}");
        match err {
            CredentialError::HtpasswdLine { line, message, .. } => (line, message),
            other => panic!("unexpected error {other:?}"),
        }
    }

    fn fixture_file() -> String {
        let mut content = String::from("# users of the test CSE\n\n   \n");
        for (n, (hash, _)) in FIXTURES.iter().enumerate() {
            content.push_str(&format!("user{n}:{hash}\r\n"));
        }
        content
    }

    #[test]
    fn parses_and_verifies_every_format() {
        let file = parse(&fixture_file(), true).expect("valid file");
        assert_eq!(file.len(), FIXTURES.len());
        assert_eq!(file.insecure_entries(), 2);
        for (n, (_, password)) in FIXTURES.iter().enumerate() {
            let user = format!("user{n}");
            assert!(file.verify(&user, password.as_bytes()), "{user}");
            assert!(!file.verify(&user, b"not the password"), "{user}");
        }
        assert!(!file.verify("user0", FIXTURES[1].1.as_bytes()));
    }

    #[test]
    fn apache_line_conventions() {
        let alice = FIXTURES[0].0;
        let content = format!("  # indented comment\n\t\n  alice:{alice}:Alice Liddell  \r\n");
        let file = parse(&content, false).expect("valid file");
        assert!(file.verify("alice", b"correct horse"));
        assert!(parse("", false).expect("empty file is valid").is_empty());
    }

    #[test]
    fn insecure_entries_need_the_flag() {
        let content = format!("alice:{}\ngina:plain text pw\n", FIXTURES[0].0);
        let (line, message) = line_error(&content, false, &["plain text pw"]);
        assert_eq!(line, 2);
        assert!(message.contains("allow_insecure_hashes"), "{message}");
        assert_eq!(
            parse(&content, true).expect("allowed").insecure_entries(),
            1
        );

        let (line, _) = line_error("gina:{PLAIN}secret\n", false, &["secret"]);
        assert_eq!(line, 1);
    }

    #[test]
    fn des_crypt_is_refused_even_with_the_flag() {
        // htpasswd -nbd hank 'descrypt'
        for allow in [false, true] {
            let (line, message) = line_error("\nhank:M3h2o80T0cVjY\n", allow, &["M3h2o80T0cVjY"]);
            assert_eq!(line, 2);
            assert!(message.contains("DES"), "{message}");
        }
    }

    #[test]
    fn malformed_lines_name_their_line_and_no_secret() {
        let ok = format!("alice:{}\n", FIXTURES[0].0);
        let cases: &[(&str, &str)] = &[
            ("hunter2-no-colon", "no ':'"),
            (
                ":$2y$05$PwPQThxF5DSff5V12f2WG.5LchoKSqzL9aE5UiMMj2mPZW7ZoAgMO",
                "user name",
            ),
            ("bob:", "hash after"),
            ("bob:  :comment", "hash after"),
            ("bob:$7$CU..../....hunter2", "supported hash"),
            ("bob:$2y$05$truncated", "bcrypt"),
            ("bob:{SSHA}hunter2hunter2", "supported hash"),
        ];
        for (bad, expected) in cases {
            let content = format!("# header\n{ok}\n{bad}\n{ok}");
            let secret = bad.split_once(':').map_or(*bad, |(_, h)| h).trim();
            let secrets: &[&str] = if secret.is_empty() { &[] } else { &[secret] };
            let (line, message) = line_error(&content, true, secrets);
            assert_eq!(line, 4, "{bad}");
            assert!(message.contains(expected), "{bad}: {message}");
            assert!(message.starts_with("expected"), "{message}");
        }
        let (line, message) = line_error(&format!("{ok}\n{ok}"), false, &[FIXTURES[0].0]);
        assert_eq!(line, 3);
        assert!(
            message.contains("\"alice\"") && message.contains("line 1"),
            "{message}"
        );
    }

    #[test]
    fn unknown_user_runs_a_dummy_verification_of_the_most_expensive_hash() {
        // two cost-5 bcrypt entries, one cost 10: the floor is bcrypt cost 10 (issue 28: the
        // most common class let an unknown user be told apart from the cost-10 one)
        let content = format!(
            "a:{}\nb:{}\nc:{}\n",
            FIXTURES[0].0, FIXTURES[1].0, FIXTURES[0].0
        );
        let file = parse(&content, false).expect("valid");
        take_verified();
        assert!(!file.verify("nobody", b"correct horse"));
        assert_eq!(take_verified(), vec![Work::Bcrypt(10)]);
        assert!(!file.verify("b", b"wrong"));
        assert_eq!(take_verified(), vec![Work::Bcrypt(10)]);
        // a cheaper user pays the floor on top of its own hash
        assert!(file.verify("a", b"correct horse"));
        assert_eq!(take_verified(), vec![Work::Bcrypt(5), Work::Bcrypt(10)]);
        assert!(file.timing_floor().contains("bcrypt cost 10"));

        let sha = format!("f:{}\n", FIXTURES[9].0);
        let file = parse(&sha, false).expect("valid");
        assert!(!file.verify("nobody", b"x"));
        assert_eq!(
            take_verified(),
            vec![Work::ShaCrypt {
                sha512: true,
                rounds: 5000
            }]
        );

        let empty = parse("# nobody yet\n", false).expect("valid");
        assert!(!empty.verify("nobody", b"x"));
        assert_eq!(take_verified(), vec![Work::Bcrypt(10)]);
    }

    #[test]
    fn sha1_and_apr1_users_are_not_faster_than_the_floor() {
        // {SHA}, apr1 and a bcrypt-5 user: the floor is the bcrypt one
        let content = format!(
            "sha:{}\napr:{}\nbc:{}\n",
            FIXTURES[6].0, FIXTURES[2].0, FIXTURES[0].0
        );
        let file = parse(&content, false).expect("valid");
        take_verified();
        assert!(file.verify("sha", b"sha1-secret"));
        assert_eq!(take_verified(), vec![Work::Sha1, Work::Bcrypt(5)]);
        assert!(!file.verify("apr", b"wrong"));
        assert_eq!(take_verified(), vec![Work::Md5Crypt, Work::Bcrypt(5)]);
        assert!(!file.verify("bc", b"wrong"));
        assert_eq!(
            take_verified(),
            vec![Work::Bcrypt(5)],
            "no padding at the floor"
        );
    }

    #[test]
    fn a_configured_floor_replaces_the_most_expensive_hash() {
        let content = format!("sha:{}\nbc:{}\n", FIXTURES[6].0, FIXTURES[0].0);
        let file = parse(&content, false)
            .expect("valid")
            .with_timing_floor(Some(6));
        assert!(file.timing_floor().contains("bcrypt cost 6 (configured)"));
        take_verified();
        assert!(!file.verify("nobody", b"x"));
        assert_eq!(take_verified(), vec![Work::Bcrypt(6)]);
        assert!(!file.verify("sha", b"x"));
        assert_eq!(take_verified(), vec![Work::Sha1, Work::Bcrypt(6)]);
        assert!(!file.verify("bc", b"x"));
        assert_eq!(take_verified(), vec![Work::Bcrypt(5), Work::Bcrypt(6)]);
        // a floor below a user's own cost: that user is not padded
        let file = parse(&content, false)
            .expect("valid")
            .with_timing_floor(Some(4));
        take_verified();
        assert!(!file.verify("bc", b"x"));
        assert_eq!(take_verified(), vec![Work::Bcrypt(5)]);
        assert!(!file.verify("nobody", b"x"));
        assert_eq!(take_verified(), vec![Work::Bcrypt(4)]);
    }

    #[test]
    fn costs_order_the_classes() {
        let order = [
            Work::Sha1,
            Work::Md5Crypt,
            Work::Bcrypt(4),
            Work::ShaCrypt {
                sha512: true,
                rounds: 5000,
            },
            Work::Bcrypt(10),
            Work::Bcrypt(13),
        ];
        for pair in order.windows(2) {
            assert!(pair[0].cost() < pair[1].cost(), "{pair:?}");
        }
        assert!(Work::Bcrypt(31).cost() > Work::Bcrypt(30).cost());
    }

    #[test]
    fn unknown_user_takes_comparable_time() {
        // Generous bounds: only catches an unknown-user path that skips the hash entirely.
        let file = parse(&format!("bob:{}\n", FIXTURES[1].0), false).expect("valid");
        let time = |user: &str| {
            let start = std::time::Instant::now();
            for _ in 0..3 {
                assert!(!file.verify(user, b"wrong password"));
            }
            start.elapsed()
        };
        let (wrong, unknown) = (time("bob"), time("nobody"));
        assert!(
            unknown * 4 > wrong,
            "unknown {unknown:?} vs wrong {wrong:?}"
        );
        assert!(
            wrong * 4 > unknown,
            "unknown {unknown:?} vs wrong {wrong:?}"
        );
    }

    #[test]
    fn fingerprints_follow_entry_changes() {
        let old = parse(&fixture_file(), true).expect("valid");
        let same = parse(&fixture_file(), true).expect("valid");
        assert_eq!(
            old.entry_fingerprint("user0"),
            same.entry_fingerprint("user0")
        );
        assert_ne!(
            old.entry_fingerprint("user0"),
            old.entry_fingerprint("user1")
        );
        assert_eq!(old.entry_fingerprint("nobody"), None);
        let changed =
            parse(&fixture_file().replace(FIXTURES[2].0, FIXTURES[3].0), true).expect("valid");
        assert_ne!(
            old.entry_fingerprint("user2"),
            changed.entry_fingerprint("user2")
        );
    }

    #[test]
    fn debug_shows_no_hash() {
        let file = parse(&fixture_file(), true).expect("valid");
        let shown = format!("{file:?}");
        assert!(!shown.contains('$') && !shown.contains("plain"), "{shown}");
    }

    #[test]
    fn htpasswd_line_round_trips() {
        let line = htpasswd_line("alice", b"s3cret: with colon").expect("line");
        assert!(line.starts_with("alice:$2y$10$"), "{line}");
        let file = parse(&line, false).expect("parses");
        assert!(file.verify("alice", b"s3cret: with colon"));
        assert!(!file.verify("alice", b"s3cret"));
    }

    #[test]
    fn htpasswd_line_refuses_bad_input() {
        for user in ["", "a:b", "tab\there", "#alice", " alice", "alice "] {
            let err = htpasswd_line(user, b"pw").expect_err(user);
            assert!(
                matches!(
                    err,
                    CredentialError::InvalidInput {
                        what: "user name",
                        ..
                    }
                ),
                "{user:?}"
            );
        }
        let long = [b'x'; 73];
        let err = htpasswd_line("alice", &long).expect_err("too long");
        assert!(err.to_string().contains("72 bytes"), "{err}");
        assert!(htpasswd_line("alice", b"").is_err());
    }
}
