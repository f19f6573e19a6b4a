//! A bounded cache of verified tokens, per VM: a repeated token costs a lookup, not
//! a signature check.
//!
//! Keyed by the token itself (std's keyed SipHash, then an exact comparison), which
//! inside the VM costs a fraction of a SHA-256 of the token and cannot collide.
//! Tokens longer than `MAX_CACHED_TOKEN_BYTES` are verified every time, so memory
//! stays under `capacity x 4 KiB` per VM.

use super::decision::Identity;
use std::collections::{HashMap, VecDeque};

/// Longest token kept in the cache, in bytes.
pub const MAX_CACHED_TOKEN_BYTES: usize = 4096;

#[derive(Debug, Clone)]
struct Entry {
    identity: Identity,
    /// Seconds since the epoch after which the entry is worthless (`exp + skew`).
    valid_until: i64,
    /// The generation of the provider's key set that verified it.
    key_generation: u64,
}

/// Verified tokens, at most `capacity`; the oldest go first.
#[derive(Debug)]
pub struct TokenCache {
    capacity: usize,
    entries: HashMap<String, Entry>,
    order: VecDeque<String>,
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The identity of a token verified before, if still valid at `now` and verified
    /// with the key set `key_generation` gives for its provider.
    pub fn get(
        &self,
        token: &str,
        now: i64,
        key_generation: impl Fn(&Identity) -> Option<u64>,
    ) -> Option<&Identity> {
        let entry = self.entries.get(token)?;
        let current = key_generation(&entry.identity)?;
        (now <= entry.valid_until && entry.key_generation == current).then_some(&entry.identity)
    }

    pub fn insert(
        &mut self,
        token: &str,
        identity: Identity,
        valid_until: i64,
        key_generation: u64,
    ) {
        if token.len() > MAX_CACHED_TOKEN_BYTES {
            return;
        }
        let entry = Entry {
            identity,
            valid_until,
            key_generation,
        };
        if self.entries.insert(token.to_string(), entry).is_none() {
            self.order.push_back(token.to_string());
        }
        while self.entries.len() > self.capacity {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.entries.remove(&oldest);
                }
                None => break,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::config::CredentialKind;

    fn identity(name: &str) -> Identity {
        Identity {
            consumer: name.into(),
            roles: vec![],
            tier: None,
            via: CredentialKind::ApiKey,
            claims: Default::default(),
        }
    }

    #[test]
    fn entries_expire_and_follow_the_key_set() {
        let mut cache = TokenCache::new(10);
        cache.insert("a.b.c", identity("u"), 100, 1);
        assert!(cache.get("a.b.c", 100, |_| Some(1)).is_some());
        assert!(cache.get("a.b.c", 101, |_| Some(1)).is_none(), "expired");
        assert!(
            cache.get("a.b.c", 50, |_| Some(2)).is_none(),
            "keys changed"
        );
        assert!(cache.get("a.b.c", 50, |_| None).is_none(), "keys gone");
        assert!(cache.get("a.b.d", 50, |_| Some(1)).is_none());
    }

    #[test]
    fn size_is_bounded_oldest_first_and_long_tokens_are_not_kept() {
        let mut cache = TokenCache::new(3);
        for n in 0..10 {
            cache.insert(&n.to_string(), identity("u"), 100, 1);
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.get("9", 0, |_| Some(1)).is_some());
        assert!(cache.get("0", 0, |_| Some(1)).is_none());
        cache.insert(
            &"x".repeat(MAX_CACHED_TOKEN_BYTES + 1),
            identity("u"),
            100,
            1,
        );
        assert_eq!(cache.len(), 3);
    }
}
