//! The tenant's audit-signing keys, read from the mounted `bulkhead-keys` Secret.
//!
//! Layout of the directory (written by the operator's secrets controller):
//! `audit-key-id` holds the current key id as text, and every key, current and
//! previous, is a file `audit-key.<id>` holding exactly 32 raw bytes. Kubernetes
//! Secret volumes add `..data` links and timestamped folders; those are skipped.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// File holding the current key id.
pub const KEY_ID_FILE: &str = "audit-key-id";
/// Prefix of a key file; the key id follows it.
pub const KEY_FILE_PREFIX: &str = "audit-key.";
/// Length of an audit key in bytes (HMAC-SHA256, 256-bit).
pub const KEY_LEN: usize = 32;

/// Why the key directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The directory cannot be listed.
    #[error(
        "cannot read the audit key directory {dir}: {source} (mount the tenant's bulkhead-keys Secret there or pass --keys)"
    )]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key or id file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key file does not hold 32 bytes.
    #[error("{path} holds {len} bytes; an audit key is exactly {KEY_LEN} raw bytes (not base64 or hex)")]
    Length {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// A key id is empty or has characters that cannot be part of a file name.
    #[error("{0:?} is not a valid audit key id: use 1 to 128 characters from A-Z a-z 0-9 . _ -")]
    BadId(String),
    /// `audit-key-id` is missing.
    #[error("{dir} has no {KEY_ID_FILE} file naming the current key: is this the tenant's bulkhead-keys Secret?")]
    NoCurrentId {
        /// The directory.
        dir: PathBuf,
    },
    /// `audit-key-id` names a key that has no file.
    #[error("{KEY_ID_FILE} names key {id:?} but {dir} has no file {KEY_FILE_PREFIX}{id}")]
    CurrentMissing {
        /// The directory.
        dir: PathBuf,
        /// The id named.
        id: String,
    },
    /// No key file at all.
    #[error("{dir} holds no {KEY_FILE_PREFIX}<id> file: no audit key to sign or verify with")]
    Empty {
        /// The directory.
        dir: PathBuf,
    },
}

/// One audit-signing key. Its bytes never leave this type except into HMAC,
/// and `Debug` redacts them.
#[derive(Clone)]
pub struct SigningKey {
    id: String,
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("id", &self.id).field("bytes", &"<redacted>").finish()
    }
}

impl SigningKey {
    /// A key from its id and raw bytes.
    pub fn new(id: impl Into<String>, bytes: [u8; KEY_LEN]) -> Result<Self, KeyError> {
        let id = id.into();
        if !valid_id(&id) {
            return Err(KeyError::BadId(id));
        }
        Ok(Self { id, bytes: Zeroizing::new(bytes) })
    }

    /// The key id.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }
}

fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && id != "."
        && id != ".."
}

/// All audit keys of a tenant, and which one signs new records.
#[derive(Clone, Debug)]
pub struct KeyRing {
    current: Option<String>,
    keys: BTreeMap<String, SigningKey>,
}

impl KeyRing {
    /// A ring from keys in memory; `current` must be one of them.
    pub fn from_keys(current: Option<&str>, keys: impl IntoIterator<Item = SigningKey>) -> Result<Self, KeyError> {
        let keys: BTreeMap<String, SigningKey> = keys.into_iter().map(|k| (k.id.clone(), k)).collect();
        if let Some(id) = current
            && !keys.contains_key(id)
        {
            return Err(KeyError::CurrentMissing { dir: PathBuf::from("<memory>"), id: id.to_string() });
        }
        Ok(Self { current: current.map(str::to_string), keys })
    }

    /// Reads every key in `dir`. The current id is optional here (verification
    /// does not need it); [`KeyRing::signing_key`] insists on it.
    pub fn load(dir: &Path) -> Result<Self, KeyError> {
        let entries = std::fs::read_dir(dir).map_err(|source| KeyError::Dir { dir: dir.to_path_buf(), source })?;
        let mut keys = BTreeMap::new();
        for entry in entries {
            let entry = entry.map_err(|source| KeyError::Dir { dir: dir.to_path_buf(), source })?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(id) = name.strip_prefix(KEY_FILE_PREFIX) else {
                continue;
            };
            let path = entry.path();
            let bytes = std::fs::read(&path).map_err(|source| KeyError::Read { path: path.clone(), source })?;
            let bytes = Zeroizing::new(bytes);
            let raw: [u8; KEY_LEN] =
                bytes.as_slice().try_into().map_err(|_| KeyError::Length { path: path.clone(), len: bytes.len() })?;
            let key = SigningKey::new(id, raw)?;
            keys.insert(key.id.clone(), key);
        }
        if keys.is_empty() {
            return Err(KeyError::Empty { dir: dir.to_path_buf() });
        }
        let id_path = dir.join(KEY_ID_FILE);
        let current = match std::fs::read_to_string(&id_path) {
            Ok(text) => {
                let id = text.trim().to_string();
                if !valid_id(&id) {
                    return Err(KeyError::BadId(id));
                }
                if !keys.contains_key(&id) {
                    return Err(KeyError::CurrentMissing { dir: dir.to_path_buf(), id });
                }
                Some(id)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(KeyError::Read { path: id_path, source });
            }
        };
        Ok(Self { current, keys })
    }

    /// Like [`KeyRing::load`], but the directory must name a current key.
    pub fn load_for_signing(dir: &Path) -> Result<Self, KeyError> {
        let ring = Self::load(dir)?;
        if ring.current.is_none() {
            return Err(KeyError::NoCurrentId { dir: dir.to_path_buf() });
        }
        Ok(ring)
    }

    /// The key new records are signed with, if the ring names one.
    pub fn signing_key(&self) -> Option<&SigningKey> {
        self.current.as_deref().and_then(|id| self.keys.get(id))
    }

    /// The key with this id.
    pub fn get(&self, id: &str) -> Option<&SigningKey> {
        self.keys.get(id)
    }

    /// Ids of every key in the ring, sorted.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_key(dir: &Path, id: &str, byte: u8) {
        std::fs::write(dir.join(format!("{KEY_FILE_PREFIX}{id}")), [byte; KEY_LEN]).unwrap();
    }

    #[test]
    fn loads_current_and_previous_keys_and_skips_secret_volume_links() {
        let dir = tempfile::tempdir().unwrap();
        write_key(dir.path(), "k1", 1);
        write_key(dir.path(), "k2", 2);
        std::fs::write(dir.path().join(KEY_ID_FILE), "k2\n").unwrap();
        std::fs::create_dir(dir.path().join("..2025_01_01_00_00_00.000")).unwrap();
        let ring = KeyRing::load_for_signing(dir.path()).unwrap();
        assert_eq!(ring.signing_key().unwrap().id(), "k2");
        assert_eq!(ring.ids().collect::<Vec<_>>(), ["k1", "k2"]);
        assert_eq!(ring.get("k1").unwrap().bytes(), &[1u8; KEY_LEN]);
    }

    #[test]
    fn wrong_length_and_missing_current_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("audit-key.k1"), b"c2VjcmV0").unwrap();
        let err = KeyRing::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("holds 8 bytes") && err.contains("32 raw bytes"), "{err}");

        write_key(dir.path(), "k1", 1);
        std::fs::write(dir.path().join(KEY_ID_FILE), "k9").unwrap();
        let err = KeyRing::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("\"k9\"") && err.contains("audit-key.k9"), "{err}");

        std::fs::remove_file(dir.path().join(KEY_ID_FILE)).unwrap();
        assert!(KeyRing::load(dir.path()).unwrap().signing_key().is_none());
        let err = KeyRing::load_for_signing(dir.path()).unwrap_err().to_string();
        assert!(err.contains("audit-key-id"), "{err}");
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let key = SigningKey::new("k1", [0xAB; KEY_LEN]).unwrap();
        let ring = KeyRing::from_keys(Some("k1"), [key.clone()]).unwrap();
        for text in [format!("{key:?}"), format!("{ring:?}"), format!("{key:#?}")] {
            assert!(text.contains("redacted"), "{text}");
            assert!(!text.contains("171") && !text.to_lowercase().contains("abab"), "{text}");
        }
    }
}
