//! `[http]`: the listener of `/metrics`, `/healthz`, `/readyz`, `/kpis`,
//! and its optional TLS and authentication (docs/operations.md#securing-the-endpoints).

use super::ConfigError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Serve `/metrics` and `/healthz` on `listen`.
    pub enabled: bool,
    /// Address of the HTTP listener.
    pub listen: String,
    /// TLS: the server certificate (PEM, leaf first, then its chain).
    /// Set with `tls_key_file`; both empty = plain HTTP.
    pub tls_cert_file: PathBuf,
    /// TLS: the certificate's private key (PEM, PKCS#8: `BEGIN PRIVATE KEY`).
    pub tls_key_file: PathBuf,
    /// Basic authentication: the user name (with `basic_auth_password_file`).
    pub basic_auth_username: String,
    /// Basic authentication: a file holding the password (one line).
    pub basic_auth_password_file: PathBuf,
    /// Bearer authentication: a file holding the token (one line).
    pub bearer_token_file: PathBuf,
    /// Paths served without authentication when it is on (probes).
    pub open_paths: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            listen: "127.0.0.1:9464".into(),
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
            basic_auth_username: String::new(),
            basic_auth_password_file: PathBuf::new(),
            bearer_token_file: PathBuf::new(),
            open_paths: vec!["/healthz".into(), "/readyz".into()],
        }
    }
}

fn set(p: &std::path::Path) -> bool {
    !p.as_os_str().is_empty()
}

impl HttpConfig {
    pub fn tls(&self) -> bool {
        set(&self.tls_cert_file)
    }

    pub fn auth(&self) -> bool {
        !self.basic_auth_username.is_empty() || set(&self.bearer_token_file)
    }

    pub(super) fn validate(&self, errs: &mut Vec<ConfigError>) {
        let mut err = |field: &str, problem: &str, fix: &str| {
            errs.push(ConfigError {
                field: field.into(),
                problem: problem.into(),
                fix: fix.into(),
            })
        };
        if self.enabled && self.listen.parse::<std::net::SocketAddr>().is_err() {
            err(
                "http.listen",
                &format!("{:?} is not a socket address", self.listen),
                "write HOST:PORT, e.g. \"127.0.0.1:9464\" or \"0.0.0.0:9464\"",
            );
        }
        if set(&self.tls_cert_file) != set(&self.tls_key_file) {
            err(
                "http.tls_cert_file",
                "TLS needs both http.tls_cert_file and http.tls_key_file",
                "set both (PEM files), or neither for plain HTTP",
            );
        }
        if self.basic_auth_username.is_empty() == set(&self.basic_auth_password_file) {
            err(
                "http.basic_auth_username",
                "basic authentication needs both http.basic_auth_username and http.basic_auth_password_file",
                "set both, or neither",
            );
        }
        for p in &self.open_paths {
            if !p.starts_with('/') {
                err(
                    "http.open_paths",
                    &format!("{p:?} is not a path"),
                    "write paths such as \"/healthz\"",
                );
            }
        }
    }
}
