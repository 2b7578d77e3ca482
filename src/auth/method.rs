//! What an authentication method is, declared once in its own file: a [`Descriptor`] (name,
//! scheme, config section, how it is built) and the [`MethodState`] it builds (its verifier,
//! the files it reloads, its `check` lines, its part of `explain`). The list of descriptors in
//! `auth/mod.rs` makes the values of [`Method`]; everything that names or counts methods
//! (`Method::ALL`, labels, config checks, the assembly in `server`) reads them from there.

use std::any::Any;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context};

use super::verifier::Verifier;
use crate::config::{AuthConfig, Config, KeyError};
use crate::identity::{Identity, Method, Scheme};
use crate::reload::{FileKind, Reloadable};
use crate::tls::TlsState;

/// One authentication method, as its file declares it.
pub struct Descriptor {
    /// The `auth.methods` value, the `method` label of the metrics, the access log's
    /// `auth_method`.
    pub name: &'static str,
    /// The scheme its 401 challenge names.
    pub scheme: Scheme,
    /// The kinds of the files it reloads (the `file` label of the reload metrics); a kind of
    /// its own is a `FileKind::Auth`.
    pub files: &'static [FileKind],
    /// Request headers besides `Authorization` that carry its credentials (lowercase): removed
    /// before a request is forwarded.
    pub headers: &'static [&'static str],
    /// Its config section (`auth.basic`).
    pub section: &'static str,
    /// What the method needs written in its section when it is enabled without one; `None`:
    /// the section has defaults.
    pub needs: Option<&'static str>,
    /// Whether its section is written.
    pub configured: fn(&AuthConfig) -> bool,
    /// Checks of its section that need nothing else (the build checks the rest).
    pub validate: fn(&AuthConfig) -> Result<(), KeyError>,
    /// Whether its failed guesses are charged to the rate limiter (the `method` label values
    /// of `rate_limited_total`).
    pub rate_limited: bool,
    /// Builds what it needs from the config: `None` when it is not in use. Run at start-up,
    /// by `check`, and by a reload of the config file that changes a start-only section (to
    /// refuse what a restart would; it keeps nothing of it).
    pub build: fn(&Config) -> Result<Option<State>, KeyError>,
}

/// What a method built, shared by the server's parts that use it.
pub type State = Arc<dyn MethodState>;

/// What the server has at hand when it asks a method for its verifier.
pub struct Assembly<'a> {
    pub config: &'a Config,
    pub tls: Option<&'a TlsState>,
}

/// What `explain` tells a method about the identity to make.
pub struct Sample<'a> {
    pub method: Method,
    /// The identity's name as the method reads it (a certificate's value, a user name, …).
    pub name: Option<&'a str>,
    /// A client certificate (PEM).
    pub cert: Option<&'a Path>,
    /// A token's claims or a service's answer (JSON).
    pub claims: Option<&'a str>,
}

impl Sample<'_> {
    /// The name, or the error that says the method needs it (`what` it is).
    pub fn name(&self, what: &str) -> anyhow::Result<&str> {
        self.name
            .ok_or_else(|| anyhow!("--method {} needs --as NAME ({what})", self.method.as_str()))
    }

    /// The claims as JSON, or the error that says the method needs them (`what` they are).
    pub fn claims(&self, what: &str) -> anyhow::Result<serde_json::Value> {
        let text = self.claims.ok_or_else(|| {
            anyhow!(
                "--method {} needs --claims JSON ({what})",
                self.method.as_str()
            )
        })?;
        serde_json::from_str(text).context("--claims: expected a JSON object")
    }
}

/// The identity `explain` shows: made (`Ok`), or refused with the method's reason.
pub type Explained = anyhow::Result<Result<Arc<Identity>, String>>;

/// What a method built from the config.
pub trait MethodState: AsAny + Send + Sync {
    /// The files it reloads; the reloader's first load reads them.
    fn reloadables(self: Arc<Self>) -> Vec<Box<dyn Reloadable>> {
        Vec::new()
    }

    /// Its verifier, when it is enabled; `None` when something it needs is missing.
    fn verifier(self: Arc<Self>, at: &Assembly<'_>) -> Option<Arc<dyn Verifier>>;

    /// Its lines of `check`.
    fn summary(&self, config: &Config) -> Vec<String>;

    /// The identity its own code makes from what `explain` was given.
    fn explain(&self, sample: &Sample<'_>) -> Explained;
}

/// A built method as the type that built it (the TLS handshake needs mTLS's own).
pub trait AsAny {
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<T: Any + Send + Sync> AsAny for T {
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// The methods built from one config, in [`Method::ALL`] order.
#[derive(Default, Clone)]
pub struct Built(Vec<(Method, Arc<dyn MethodState>)>);

impl Built {
    /// Every method in use.
    pub fn from_config(config: &Config) -> Result<Built, KeyError> {
        let mut built = Vec::new();
        for method in Method::ALL {
            if let Some(state) = (method.descriptor().build)(config)? {
                built.push((method, state));
            }
        }
        Ok(Built(built))
    }

    pub fn get(&self, method: Method) -> Option<&Arc<dyn MethodState>> {
        self.0.iter().find(|(m, _)| *m == method).map(|(_, s)| s)
    }

    /// What `method` built, as its own type.
    pub fn own<T: Any + Send + Sync>(&self, method: Method) -> Option<Arc<T>> {
        self.get(method)
            .and_then(|s| s.clone().into_any().downcast::<T>().ok())
    }

    pub fn iter(&self) -> impl Iterator<Item = &(Method, Arc<dyn MethodState>)> {
        self.0.iter()
    }

    /// The files every method in use reloads.
    pub fn reloadables(&self) -> Vec<Box<dyn Reloadable>> {
        self.0
            .iter()
            .flat_map(|(_, s)| s.clone().reloadables())
            .collect()
    }

    /// The verifiers of `enabled`, in that order; the error names a method that has none.
    pub fn verifiers(
        &self,
        enabled: &[Method],
        at: &Assembly<'_>,
    ) -> Result<Vec<Arc<dyn Verifier>>, KeyError> {
        enabled
            .iter()
            .map(|m| {
                self.get(*m)
                    .and_then(|s| s.clone().verifier(at))
                    .ok_or_else(|| {
                        KeyError::new(
                            "auth.methods",
                            format!("method `{}` is not configured", m.as_str()),
                        )
                    })
            })
            .collect()
    }
}

/// Every kind of file the proxy reloads: `FileKind::ALL` and the methods' own kinds.
pub fn file_kinds() -> Vec<FileKind> {
    let mut kinds = FileKind::ALL.to_vec();
    for kind in Method::ALL.iter().flat_map(|m| m.descriptor().files) {
        if !kinds.contains(kind) {
            kinds.push(*kind);
        }
    }
    kinds
}

impl Method {
    /// Its name: the config value and the label of metrics and logs.
    pub fn as_str(self) -> &'static str {
        self.descriptor().name
    }

    /// The HTTP authentication scheme its 401 challenge names.
    pub fn scheme(self) -> Scheme {
        self.descriptor().scheme
    }

    pub fn named(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// The names of every method, for error texts: "mtls, basic, …".
    pub fn names() -> String {
        Method::ALL.map(Method::as_str).join(", ")
    }
}

impl std::fmt::Debug for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Method {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Method::named(&name).ok_or_else(|| serde::de::Error::unknown_variant(&name, &Method::NAMES))
    }
}

/// The list: `methods! { Name = path::to::DESCRIPTOR; … }` makes `Method::Name` (in list
/// order) and `Method::ALL`, and gives each its descriptor.
macro_rules! methods {
    ($($name:ident = $descriptor:path;)+) => {
        #[allow(non_upper_case_globals)]
        impl $crate::identity::Method {
            $crate::auth::method::methods!(@consts 0usize; $($name)+);
            pub const ALL: [$crate::identity::Method; [$(stringify!($name)),+].len()] =
                [$($crate::identity::Method::$name),+];
            const NAMES: [&'static str; [$(stringify!($name)),+].len()] = [$($descriptor.name),+];

            /// Everything its file declares about it.
            pub fn descriptor(self) -> &'static $crate::auth::method::Descriptor {
                const LIST: &[&$crate::auth::method::Descriptor] = &[$(&$descriptor),+];
                LIST[self.index()]
            }
        }
        // one bit each in a `u64`, one kept for "no method" (`rules`)
        const _: () = assert!($crate::identity::Method::ALL.len() < 64);
    };
    (@consts $i:expr; $first:ident $($rest:ident)*) => {
        pub const $first: $crate::identity::Method = $crate::identity::Method::at($i);
        $crate::auth::method::methods!(@consts $i + 1; $($rest)*);
    };
    (@consts $i:expr;) => {};
}
pub(crate) use methods;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_is_declared_once_and_well_formed() {
        let mut names = std::collections::HashSet::new();
        for (i, m) in Method::ALL.into_iter().enumerate() {
            let d = m.descriptor();
            assert_eq!(m.index(), i);
            assert!(names.insert(d.name), "{} listed twice", d.name);
            assert_eq!(Method::named(d.name), Some(m));
            assert_eq!(format!("{m:?}"), d.name);
            assert!(d.section.starts_with("auth."), "{}", d.section);
            for h in d.headers {
                assert_eq!(http::HeaderName::from_static(h).as_str(), *h);
            }
        }
        assert_eq!(Method::named("none"), None);
        let names: Vec<_> = Method::ALL.map(Method::as_str).into();
        assert_eq!(Method::names(), names.join(", "));
    }

    #[test]
    fn a_method_name_deserializes_and_another_is_refused_with_the_list() {
        let m: Vec<Method> = serde_yaml_ng::from_str("[jwt, mtls]").unwrap();
        assert_eq!(m, [Method::Jwt, Method::Mtls]);
        let e = serde_yaml_ng::from_str::<Method>("kerberos").unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown variant `kerberos`, expected one of `mtls`, `basic`"),
            "{e}"
        );
    }
}
