//! A bounded cache of verified tokens, per VM: a repeated token costs a lookup, not
//! a signature check. Keyed by the SHA-256 of the token, so tokens are not kept.

use super::decision::Identity;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};

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
    entries: HashMap<[u8; 32], Entry>,
    order: VecDeque<[u8; 32]>,
}

/// The cache key of a token.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
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
    /// with the provider's current key set.
    pub fn get(&self, digest: &[u8; 32], now: i64, key_generation: u64) -> Option<&Identity> {
        let entry = self.entries.get(digest)?;
        (now <= entry.valid_until && entry.key_generation == key_generation)
            .then_some(&entry.identity)
    }

    pub fn insert(
        &mut self,
        digest: [u8; 32],
        identity: Identity,
        valid_until: i64,
        key_generation: u64,
    ) {
        let entry = Entry {
            identity,
            valid_until,
            key_generation,
        };
        if self.entries.insert(digest, entry).is_none() {
            self.order.push_back(digest);
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
        }
    }

    #[test]
    fn entries_expire_and_follow_the_key_set() {
        let mut cache = TokenCache::new(10);
        let digest = token_digest("a.b.c");
        cache.insert(digest, identity("u"), 100, 1);
        assert!(cache.get(&digest, 100, 1).is_some());
        assert!(cache.get(&digest, 101, 1).is_none(), "expired");
        assert!(cache.get(&digest, 50, 2).is_none(), "keys changed");
    }

    #[test]
    fn size_is_bounded_oldest_first() {
        let mut cache = TokenCache::new(3);
        for n in 0..10 {
            cache.insert(token_digest(&n.to_string()), identity("u"), 100, 1);
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&token_digest("9"), 0, 1).is_some());
        assert!(cache.get(&token_digest("0"), 0, 1).is_none());
    }
}
