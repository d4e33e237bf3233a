//! Local personas: who this machine is on which relay, with the session token. One JSON file
//! per email under `$XDG_CONFIG_HOME/gts-webchat/personas/` (dir 0700, files 0600).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::Kind;
use crate::private_fs::{self, FsError};

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Persona {
    pub email: String,
    pub display_name: String,
    pub chat_address: String,
    #[serde(default)]
    pub kind: Kind,
    /// Free label such as "Codex agent".
    #[serde(default)]
    pub persona: Option<String>,
    /// The machine ("computer") the session runs on.
    #[serde(default)]
    pub computer: Option<String>,
    #[serde(default)]
    pub session_name: Option<String>,
    #[serde(default = "default_channel")]
    pub listen_channel: String,
    pub relay: String,
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub relay_mode: Option<String>,
    /// The session token; only ever written to this 0600 file.
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub verified: bool,
    pub created_at: String,
    #[serde(default)]
    pub last_seen: Option<String>,
}

fn default_channel() -> String {
    crate::api::PCHAT_CHANNEL.to_string()
}

// Hand-written so `{:?}` can never print the token.
impl std::fmt::Debug for Persona {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persona")
            .field("email", &self.email)
            .field("chat_address", &self.chat_address)
            .field("relay", &self.relay)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PersonaError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(
        "persona file {path} is damaged ({why}); delete it and run `gts-webchat persona` again"
    )]
    Damaged { path: PathBuf, why: String },
    #[error("no config directory could be found for this user; set XDG_CONFIG_HOME or HOME")]
    NoConfigDir,
}

/// The persona directory for this user.
pub fn default_dir() -> Result<PathBuf, PersonaError> {
    dirs::config_dir()
        .map(|d| d.join("gts-webchat").join("personas"))
        .ok_or(PersonaError::NoConfigDir)
}

/// The personas on disk.
#[derive(Debug, Clone)]
pub struct PersonaStore {
    dir: PathBuf,
}

fn file_name(email: &str) -> String {
    let safe: String = email
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '@' | '.' | '_' | '+' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.json")
}

impl PersonaStore {
    pub fn open_default() -> Result<PersonaStore, PersonaError> {
        Ok(PersonaStore::at(default_dir()?))
    }

    pub fn at(dir: impl Into<PathBuf>) -> PersonaStore {
        PersonaStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path_for(&self, email: &str) -> PathBuf {
        self.dir.join(file_name(email))
    }

    fn read(path: &Path) -> Result<Option<Persona>, PersonaError> {
        match private_fs::read_optional(path)? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| PersonaError::Damaged {
                        path: path.to_path_buf(),
                        why: e.to_string(),
                    })
            }
        }
    }

    /// The persona for an email, if this machine has one.
    pub fn by_email(&self, email: &str) -> Result<Option<Persona>, PersonaError> {
        Self::read(&self.path_for(&email.trim().to_ascii_lowercase()))
    }

    /// The persona named by email or chat address (the most recently used if several).
    pub fn find(&self, who: &str) -> Result<Option<Persona>, PersonaError> {
        let who = who.trim().to_ascii_lowercase();
        if who.contains('@') {
            return self.by_email(&who);
        }
        let mut hits: Vec<Persona> = self
            .list()?
            .into_iter()
            .filter(|p| p.chat_address == who)
            .collect();
        hits.sort_by(|a, b| b.last_seen.cmp(&a.last_seen));
        Ok(hits.into_iter().next())
    }

    /// Every persona, sorted by email. Damaged files are skipped with a warning.
    pub fn list(&self) -> Result<Vec<Persona>, PersonaError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(FsError::new("listing", &self.dir, e).into()),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|x| x == "json") {
                match Self::read(&path) {
                    Ok(Some(p)) => out.push(p),
                    Ok(None) => {}
                    Err(e) => tracing::warn!("skipping persona file: {e}"),
                }
            }
        }
        out.sort_by(|a, b| a.email.cmp(&b.email));
        Ok(out)
    }

    /// Writes the persona (0600, atomically).
    pub fn save(&self, p: &Persona) -> Result<(), PersonaError> {
        private_fs::private_dir(&self.dir)?;
        let bytes = serde_json::to_vec_pretty(p).map_err(|e| PersonaError::Damaged {
            path: self.path_for(&p.email),
            why: e.to_string(),
        })?;
        private_fs::atomic_write(&self.path_for(&p.email), &bytes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sample(email: &str, address: &str, seen: &str) -> Persona {
        Persona {
            email: email.into(),
            display_name: "X".into(),
            chat_address: address.into(),
            kind: Kind::Agent,
            persona: None,
            computer: None,
            session_name: None,
            listen_channel: "pchat".into(),
            relay: "http://127.0.0.1:5110".into(),
            site: None,
            relay_mode: None,
            token: Some("pct_secret".into()),
            verified: true,
            created_at: "2026-01-01T00:00:00Z".into(),
            last_seen: Some(seen.into()),
        }
    }

    #[test]
    fn save_find_list() {
        let dir = tempfile::tempdir().unwrap();
        let store = PersonaStore::at(dir.path().join("p"));
        store
            .save(&sample("a@x.com", "same", "2026-01-01T00:00:00Z"))
            .unwrap();
        store
            .save(&sample("b@x.com", "same", "2026-02-01T00:00:00Z"))
            .unwrap();
        assert_eq!(store.list().unwrap().len(), 2);
        assert_eq!(store.find("A@X.com").unwrap().unwrap().email, "a@x.com");
        assert_eq!(store.find("same").unwrap().unwrap().email, "b@x.com");
        assert!(store.find("nobody").unwrap().is_none());
        let mode = std::fs::metadata(store.path_for("a@x.com"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(store.dir()).unwrap().permissions().mode();
        assert_eq!(dmode & 0o777, 0o700);
        assert!(!format!("{:?}", sample("a@x.com", "a", "t")).contains("pct_secret"));
    }
}
