//! What the TTS services keep in Redis, and how they reach it: one
//! [`connect`] with every wait bounded, the worker registry's [`registry`]
//! entries, and every key name ([`keys`]), so that the services, the
//! doctor and an operator's `redis-cli` agree on them.

use std::time::Duration;

/// How long one Redis command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// A Redis connection that reconnects by itself, with every wait bounded
/// by [`COMMAND_TIMEOUT`] (a dead server would otherwise hang calls).
pub async fn connect(url: &str) -> Result<redis::aio::ConnectionManager, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    tokio::time::timeout(
        COMMAND_TIMEOUT * 2,
        redis::aio::ConnectionManager::new_with_config(client, config),
    )
    .await
    .map_err(|_| format!("no connection within {:?}", COMMAND_TIMEOUT * 2))?
    .map_err(|e| e.to_string())
}

/// Every key name the services use.
pub mod keys {
    /// Each worker's registry entry: this + its URL.
    pub const WORKER_PREFIX: &str = "tts:worker:";
    /// Every key of the phrase cache starts with this (entries, index,
    /// sizes).
    pub const PHRASE_FAMILY: &str = "tts:phrase";
    /// A cached phrase: this + the SHA-256 of its key, hex.
    pub const PHRASE_PREFIX: &str = "tts:phrase:";
    /// The phrase cache's entries by expiry (a sorted set).
    pub const PHRASE_INDEX: &str = "tts:phrase-index";
    /// The phrase cache's entry sizes (a hash).
    pub const PHRASE_SIZES: &str = "tts:phrase-sizes";
}

/// How workers announce themselves: one key per worker,
/// [`registry::KEY_PREFIX`] + its URL, holding an [`registry::Entry`] as
/// JSON and expiring unless renewed (the heartbeat).
pub mod registry {
    pub use super::{COMMAND_TIMEOUT, connect};

    /// Every worker's key starts with this.
    pub const KEY_PREFIX: &str = super::keys::WORKER_PREFIX;

    /// What a worker says about itself.
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Entry {
        /// Where orchestrators reach its gRPC service.
        pub url: String,
        /// Its voices, as `ListVoices` names them.
        pub voices: Vec<String>,
        /// Synthesis threads.
        pub threads: u32,
        /// The worker's version.
        pub version: String,
    }

    /// The key of the worker at `url`.
    pub fn key(url: &str) -> String {
        format!("{KEY_PREFIX}{url}")
    }

    impl Entry {
        /// The entry as stored.
        pub fn to_json(&self) -> String {
            serde_json::to_string(self).unwrap_or_default()
        }

        /// An entry as stored; `None` for anything else.
        pub fn from_json(text: &str) -> Option<Self> {
            serde_json::from_str(text).ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::registry::{Entry, key};

    #[test]
    fn entries_and_keys_read_back() {
        let e = Entry {
            url: "http://w:7001".into(),
            voices: vec!["joe".into()],
            threads: 2,
            version: "0.1.0".into(),
        };
        assert_eq!(Entry::from_json(&e.to_json()), Some(e));
        assert_eq!(Entry::from_json("not json"), None);
        assert_eq!(key("http://w:7001"), "tts:worker:http://w:7001");
        assert!(super::keys::PHRASE_PREFIX.starts_with(super::keys::PHRASE_FAMILY));
    }
}
