//! What the host provides that tests must control.
//!
//! The filter crates implement these traits with proxy-wasm calls; tests implement
//! them with fixed values.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock time as the host sees it.
pub trait Clock {
    /// The current time.
    fn now(&self) -> SystemTime;

    /// Milliseconds since the Unix epoch, 0 for a clock set before it.
    fn now_millis(&self) -> u64 {
        millis_since_epoch(self.now())
    }
}

/// A source of random bytes.
pub trait RandomSource {
    /// Fills `buffer` with random bytes. Must not fail: an implementation whose
    /// system source fails falls back to a weaker generator of its own.
    fn fill(&mut self, buffer: &mut [u8]);
}

/// The proxy's shared key-value store (Envoy's shared data): common to every VM of
/// the process, versioned for compare-and-swap, with no delete.
pub trait SharedStore {
    /// The value and its version, `None` when the key was never written.
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError>;

    /// Writes `value` if the key's version is still `version`; `None` writes
    /// unconditionally (the host has no "only if absent").
    fn set(&self, key: &str, value: &[u8], version: Option<u32>) -> Result<(), StoreError>;
}

/// Writes `value` at `key` unless the key exists. The host can only create a key
/// unconditionally, so call this where nothing else writes yet: the first VM's
/// configuration (Envoy's main thread), before any worker serves it.
pub fn create_if_absent(
    store: &dyn SharedStore,
    key: &str,
    value: &[u8],
) -> Result<bool, StoreError> {
    if store.get(key)?.is_some() {
        return Ok(false);
    }
    store.set(key, value, None)?;
    Ok(true)
}

/// An in-memory store with the host's semantics (versions, compare-and-swap,
/// unconditional create), for tests and for `gatehouse explain`.
#[derive(Debug, Default)]
pub struct MemoryStore {
    pub entries: std::cell::RefCell<std::collections::HashMap<String, (Vec<u8>, u32)>>,
    next: std::cell::Cell<u32>,
    /// Conditional writes to refuse with a version mismatch before succeeding.
    pub interfere: std::cell::Cell<u32>,
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        Ok(self.entries.borrow().get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8], version: Option<u32>) -> Result<(), StoreError> {
        if self.interfere.get() > 0 && version.is_some() {
            self.interfere.set(self.interfere.get() - 1);
            return Err(StoreError::VersionMismatch);
        }
        let mut entries = self.entries.borrow_mut();
        if let (Some(version), Some((_, current))) = (version, entries.get(key)) {
            if version != *current {
                return Err(StoreError::VersionMismatch);
            }
        }
        let next = self.next.get().wrapping_add(1);
        self.next.set(next);
        entries.insert(key.to_string(), (value.to_vec(), next));
        Ok(())
    }
}

/// Why the store refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// Another writer changed the value since it was read.
    VersionMismatch,
    /// The host refused for another reason.
    Unavailable,
}

/// Milliseconds since the Unix epoch, 0 for a time before it, saturating far after.
pub fn millis_since_epoch(time: SystemTime) -> u64 {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// A deterministic generator (SplitMix64), for tests and as a fallback where the
/// host's random source fails. Not for secrets.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator that starts from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl RandomSource for SplitMix64 {
    fn fill(&mut self, buffer: &mut [u8]) {
        for chunk in buffer.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}
