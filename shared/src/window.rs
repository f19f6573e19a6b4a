//! Per-second counts over a trailing window, encoded for shared data: used by the
//! rate limiter's alert and the traffic filter's health gate and circuit breaker.

use crate::host::{SharedStore, StoreError};

/// Adds `a` and `b` to the current second of the ring kept at `key` (compare-and-
/// swap, a few retries). False when the store kept changing or failed.
pub fn add(store: &dyn SharedStore, key: &str, len: usize, now_ms: u64, a: u64, b: u64) -> bool {
    let now_s = now_ms / 1000;
    for _ in 0..16 {
        let (mut ring, version) = match store.get(key) {
            Ok(Some((bytes, version))) => (Ring::decode(&bytes, len, now_s), Some(version)),
            Ok(None) => (Ring::empty(len, now_s), None),
            Err(_) => return false,
        };
        ring.advance(now_s);
        if let Some(last) = ring.buckets.last_mut() {
            last.0 = last.0.saturating_add(u32::try_from(a).unwrap_or(u32::MAX));
            last.1 = last.1.saturating_add(u32::try_from(b).unwrap_or(u32::MAX));
        }
        match store.set(key, &ring.encode(), version) {
            Ok(()) => return true,
            Err(StoreError::VersionMismatch) => continue,
            Err(StoreError::Unavailable) => return false,
        }
    }
    false
}

/// The totals over the trailing window of the ring kept at `key`.
pub fn totals(store: &dyn SharedStore, key: &str, len: usize, now_ms: u64) -> (u64, u64) {
    let now_s = now_ms / 1000;
    match store.get(key) {
        Ok(Some((bytes, _))) => {
            let mut ring = Ring::decode(&bytes, len, now_s);
            ring.advance(now_s);
            ring.totals()
        }
        _ => (0, 0),
    }
}

/// Two counts per second over a window (and the second being filled), as kept in
/// shared data: `[first second u64][a u32, b u32]...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    pub first: u64,
    pub buckets: Vec<(u32, u32)>,
}

impl Ring {
    pub fn empty(len: usize, now_s: u64) -> Self {
        Self {
            first: (now_s + 1).saturating_sub(len as u64),
            buckets: vec![(0, 0); len],
        }
    }

    pub fn decode(bytes: &[u8], len: usize, now_s: u64) -> Self {
        let expected = 8 + 8 * len;
        if bytes.len() != expected {
            return Self::empty(len, now_s);
        }
        let word = |offset: usize| -> u32 {
            bytes
                .get(offset..offset + 4)
                .and_then(|chunk| <[u8; 4]>::try_from(chunk).ok())
                .map_or(0, u32::from_le_bytes)
        };
        let first = bytes
            .get(..8)
            .and_then(|chunk| <[u8; 8]>::try_from(chunk).ok())
            .map_or(0, u64::from_le_bytes);
        let buckets = (0..len)
            .map(|index| (word(8 + 8 * index), word(12 + 8 * index)))
            .collect();
        Self { first, buckets }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 8 * self.buckets.len());
        out.extend_from_slice(&self.first.to_le_bytes());
        for (total, limited) in &self.buckets {
            out.extend_from_slice(&total.to_le_bytes());
            out.extend_from_slice(&limited.to_le_bytes());
        }
        out
    }

    /// Moves the ring so that its last bucket is `now_s`.
    pub fn advance(&mut self, now_s: u64) {
        let len = self.buckets.len() as u64;
        let last = (self.first + len).saturating_sub(1);
        if now_s <= last {
            return;
        }
        let shift = now_s - last;
        if shift >= len {
            self.buckets.iter_mut().for_each(|bucket| *bucket = (0, 0));
        } else {
            let shift = usize::try_from(shift).unwrap_or(0);
            self.buckets.rotate_left(shift);
            let keep = self.buckets.len() - shift;
            self.buckets[keep..]
                .iter_mut()
                .for_each(|bucket| *bucket = (0, 0));
        }
        self.first = (now_s + 1).saturating_sub(len);
    }

    pub fn totals(&self) -> (u64, u64) {
        self.buckets
            .iter()
            .fold((0, 0), |(total, limited), bucket| {
                (total + u64::from(bucket.0), limited + u64::from(bucket.1))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_window_only() {
        let mut ring = Ring::empty(3, 100);
        ring.buckets = vec![(1, 0), (2, 1), (3, 1)];
        ring.advance(101);
        assert_eq!(ring.buckets, vec![(2, 1), (3, 1), (0, 0)]);
        ring.advance(500);
        assert_eq!(ring.totals(), (0, 0));
        let bytes = ring.encode();
        assert_eq!(Ring::decode(&bytes, 3, 500), ring);
        assert_eq!(Ring::decode(&bytes[1..], 3, 500), Ring::empty(3, 500));
    }
}
