//! `[privacy]`: the key entity ids are pseudonymised with (docs/privacy.md).

use super::ConfigError;
use crate::privacy::{key_next_to, parse_key, read_or_create_key, KeySource, Pseudonyms};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// A file holding the pseudonym key: 32 hexadecimal digits
    /// (`openssl rand -hex 16 > salespulse.key`). Read at start-up.
    pub key_file: PathBuf,
    /// The key itself, for the environment (`SALESPULSE_PRIVACY__KEY`);
    /// never logged. At most one of `key` and `key_file`.
    pub key: String,
    /// The key this run uses, once [`PrivacyConfig::resolve`]d (the
    /// built-in public key before).
    #[serde(skip)]
    pub pseudonyms: Pseudonyms,
}

/// Never shows the key.
impl fmt::Debug for PrivacyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivacyConfig")
            .field("key_file", &self.key_file)
            .field(
                "key",
                &if self.key.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("pseudonyms", &self.pseudonyms)
            .finish()
    }
}

const FIX_KEY: &str = "give 32 hexadecimal digits, e.g. the output of `openssl rand -hex 16`";

impl PrivacyConfig {
    pub(super) fn validate(&self, errs: &mut Vec<ConfigError>) {
        if !self.key.is_empty() && !self.key_file.as_os_str().is_empty() {
            errs.push(ConfigError {
                field: "privacy.key".into(),
                problem: "both privacy.key and privacy.key_file are set".into(),
                fix: "keep one of them".into(),
            });
        }
        if !self.key.is_empty() {
            if let Err(e) = parse_key(&self.key) {
                errs.push(ConfigError {
                    field: "privacy.key".into(),
                    problem: e,
                    fix: FIX_KEY.into(),
                });
            }
        }
    }

    /// [`PrivacyConfig::resolve`], and says at start-up where the key
    /// came from (its fingerprint, never the key), or warns that there is none.
    pub fn resolve_logged(&mut self, checkpoint: &Path, shared: bool) -> Result<(), ConfigError> {
        let source = self.resolve(Some(checkpoint), shared)?;
        let fingerprint = self.pseudonyms.fingerprint().to_string();
        match source {
            KeySource::BuiltIn => tracing::warn!(
                "privacy.key_file is not set: entity ids are hashed under the built-in public key, so anyone with a list of candidate ids can recognise them in the changelog (fix: give every instance the same privacy.key_file or SALESPULSE_PRIVACY__KEY; docs/privacy.md)"
            ),
            KeySource::NextToCheckpoint(p) => {
                tracing::info!(key_file = %p.display(), %fingerprint, "pseudonym key kept next to the checkpoint")
            }
            KeySource::File(p) => tracing::info!(key_file = %p.display(), %fingerprint, "pseudonym key"),
            KeySource::Setting => tracing::info!(%fingerprint, "pseudonym key from privacy.key"),
            KeySource::Ephemeral => {
                tracing::debug!("pseudonym key generated for this run (nothing is persisted)")
            }
        }
        Ok(())
    }

    /// Chooses this run's key: `privacy.key`, else `privacy.key_file`,
    /// else one generated next to the checkpoint file (kept for the next
    /// runs), else — nothing persisted — one for this run only. Kafka
    /// mode (`shared`: several instances and a changelog must agree)
    /// without a key gets the built-in public key; the caller warns.
    pub fn resolve(
        &mut self,
        checkpoint: Option<&Path>,
        shared: bool,
    ) -> Result<KeySource, ConfigError> {
        let (key, source) = if !self.key.is_empty() {
            let key = parse_key(&self.key).map_err(|problem| ConfigError {
                field: "privacy.key".into(),
                problem,
                fix: FIX_KEY.into(),
            })?;
            (Some(key), KeySource::Setting)
        } else if !self.key_file.as_os_str().is_empty() {
            let p = &self.key_file;
            let text = std::fs::read_to_string(p).map_err(|e| ConfigError {
                field: "privacy.key_file".into(),
                problem: format!("cannot read {}: {e}", p.display()),
                fix: "give the path of a readable file holding the key (`openssl rand -hex 16 > salespulse.key`)".into(),
            })?;
            let key = parse_key(&text).map_err(|e| ConfigError {
                field: "privacy.key_file".into(),
                problem: format!("{}: {e}", p.display()),
                fix: FIX_KEY.into(),
            })?;
            (Some(key), KeySource::File(p.clone()))
        } else if let Some(ckpt) = checkpoint.filter(|p| !p.as_os_str().is_empty()) {
            let p = key_next_to(ckpt);
            let key = read_or_create_key(&p).map_err(|problem| ConfigError {
                field: "privacy.key_file".into(),
                problem,
                fix: format!(
                    "set privacy.key_file, or let salespulse write {} (a directory it can write)",
                    p.display()
                ),
            })?;
            (Some(key), KeySource::NextToCheckpoint(p))
        } else if shared {
            (None, KeySource::BuiltIn)
        } else {
            let key = Pseudonyms::generate().map_err(|e| ConfigError {
                field: "privacy.key_file".into(),
                problem: format!("no random source to generate a key: {e}"),
                fix: "set privacy.key_file".into(),
            })?;
            (Some(key), KeySource::Ephemeral)
        };
        self.pseudonyms = key.map(Pseudonyms::new).unwrap_or_default();
        Ok(source)
    }
}
