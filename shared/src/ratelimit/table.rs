//! Counters in the proxy's shared data: a fixed table of slots per limit, updated
//! with compare-and-swap so that counts are exact across workers.
//!
//! Shared data has no delete, so memory is bounded by construction: each limit owns
//! `slots` keys `gatehouse.ratelimit.<name>.<limit>.<slot>`, created once (by the
//! first VM to configure, Envoy's main thread) and reused for ever. A client key
//! hashes (keyed by a per-process random seed, so clients cannot aim at a slot) to a
//! home slot and may live in any of the `PROBES` slots from there. Each entry holds
//! the limit's definition fingerprint and the client key's fingerprint besides its
//! counts, so entries are never shared by two clients: a new client takes an empty,
//! idle or outdated slot of its four, and when all four count other active clients
//! it evicts the one that has used the least of its budget (whose budget starts
//! again; counted as an
//! eviction).

use super::algorithm::{Algorithm, Quota, Rule, State, Taken};
use crate::host::{SharedStore, StoreError};
use std::hash::{Hash, Hasher};

/// Slots a client key may live in, from its home slot on.
pub const PROBES: u32 = 4;
const VERSION: u8 = 1;

/// A limit's table as one request sees it.
#[derive(Debug, Clone, Copy)]
pub struct Table<'a> {
    /// The filter instance's name.
    pub instance: &'a str,
    pub limit: &'a str,
    pub definition: u64,
    pub slots: u32,
    pub algorithm: Algorithm,
}

impl<'a> Table<'a> {
    /// The table of `limit` in the instance `settings` configures.
    pub fn of(settings: &'a super::RateLimitSettings, limit: &'a super::config::Limit) -> Self {
        Self {
            instance: &settings.name,
            limit: &limit.name,
            definition: limit.fingerprint,
            slots: settings.slots,
            algorithm: limit.algorithm,
        }
    }
}

/// The key of a slot in shared data.
pub fn slot_key(instance: &str, limit: &str, slot: u32) -> String {
    format!("gatehouse.ratelimit.{instance}.{limit}.{slot}")
}

/// The shared-data key that says a table was created, with its definition.
pub fn table_marker(instance: &str, limit: &str) -> String {
    format!("gatehouse.ratelimit.{instance}.{limit}.table")
}

/// A client key's fingerprint (never 0, which marks an empty slot).
pub fn fingerprint(seed: u64, limit: &str, key: &[u8]) -> u64 {
    // std's SipHash, keyed by hashing the process's secret seed first.
    let mut hasher = std::hash::DefaultHasher::new();
    seed.hash(&mut hasher);
    limit.hash(&mut hasher);
    key.hash(&mut hasher);
    hasher.finish() | 1
}

/// An entry's bytes: version, definition, client fingerprint, state.
fn encode(definition: u64, client: u64, state: Option<&State>) -> Vec<u8> {
    let mut out = Vec::with_capacity(80);
    out.push(VERSION);
    out.extend_from_slice(&definition.to_le_bytes());
    out.extend_from_slice(&client.to_le_bytes());
    if let Some(state) = state {
        state.encode(&mut out);
    }
    out
}

struct Entry {
    definition: u64,
    client: u64,
    state: Option<State>,
}

fn decode(bytes: &[u8]) -> Option<Entry> {
    let (version, rest) = bytes.split_first()?;
    if *version != VERSION {
        return None;
    }
    let word = |offset: usize| -> Option<u64> {
        let chunk: [u8; 8] = rest.get(offset..offset + 8)?.try_into().ok()?;
        Some(u64::from_le_bytes(chunk))
    };
    Some(Entry {
        definition: word(0)?,
        client: word(8)?,
        state: rest.get(16..).and_then(State::decode),
    })
}

/// The bytes of an empty slot, written when a table is created.
pub fn empty_entry(definition: u64) -> Vec<u8> {
    encode(definition, 0, None)
}

/// Creates the table's slots that do not exist yet. Run by the first VM to
/// configure, before any request can count: shared data can only create a key
/// unconditionally, so creating slots while requests count could lose a count.
pub fn create(store: &dyn SharedStore, table: &Table<'_>) -> Result<bool, StoreError> {
    let marker = table_marker(table.instance, table.limit);
    let wanted = encode(table.definition, u64::from(table.slots), None);
    if let Some((value, _)) = store.get(&marker)? {
        if value == wanted {
            return Ok(false);
        }
    }
    let empty = empty_entry(table.definition);
    for slot in 0..table.slots {
        let key = slot_key(table.instance, table.limit, slot);
        if store.get(&key)?.is_none() {
            store.set(&key, &empty, None)?;
        }
    }
    store.set(&marker, &wanted, None)?;
    Ok(true)
}

/// Where a request was counted, to give it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub slot: u32,
    pub taken: Taken,
}

/// Creates the tables of every limit of a configuration (tests and tools; the
/// filter creates them one by one to log each).
pub fn create_all(
    store: &dyn SharedStore,
    settings: &super::RateLimitSettings,
) -> Result<(), StoreError> {
    for limit in &settings.limits {
        let table = Table::of(settings, limit);
        create(store, &table)?;
    }
    Ok(())
}

/// What counting one request in one limit gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Counted {
    /// Counted; `taken` says where, to give it back.
    Admitted {
        receipt: Receipt,
        quota: Quota,
        evicted: bool,
    },
    /// Over the limit: not counted.
    Refused { quota: Quota, evicted: bool },
    /// The store kept changing under us (or refused): nothing counted.
    Contention,
}

impl Table<'_> {
    fn home(&self, client: u64) -> u32 {
        u32::try_from((client >> 1) % u64::from(self.slots.max(1))).unwrap_or(0)
    }

    fn probe(&self, client: u64, step: u32) -> u32 {
        let slots = self.slots.max(1);
        u32::try_from((u64::from(self.home(client)) + u64::from(step)) % u64::from(slots))
            .unwrap_or(0)
    }

    /// Counts one request of the client `client` under `rule` at `now_ms`, with at
    /// most `retries` compare-and-swap attempts.
    pub fn count(
        &self,
        store: &dyn SharedStore,
        client: u64,
        rule: &Rule,
        now_ms: u64,
        retries: u32,
    ) -> Counted {
        for _ in 0..retries.max(1) {
            let Ok(Some(found)) = self.locate(store, client, rule, now_ms) else {
                return Counted::Contention;
            };
            let mut state = found
                .state
                .unwrap_or_else(|| State::fresh(self.algorithm, rule, now_ms));
            let (taken, quota) = state.check(rule, now_ms);
            if taken.is_none() && !found.takeover {
                // Refused: nothing to write.
                return Counted::Refused {
                    quota,
                    evicted: found.evicted,
                };
            }
            let bytes = encode(self.definition, client, Some(&state));
            let key = slot_key(self.instance, self.limit, found.slot);
            match store.set(&key, &bytes, found.version) {
                Ok(()) => {
                    return match taken {
                        Some(taken) => Counted::Admitted {
                            receipt: Receipt {
                                slot: found.slot,
                                taken,
                            },
                            quota,
                            evicted: found.evicted,
                        },
                        None => Counted::Refused {
                            quota,
                            evicted: found.evicted,
                        },
                    }
                }
                Err(StoreError::VersionMismatch) => continue,
                Err(StoreError::Unavailable) => return Counted::Contention,
            }
        }
        Counted::Contention
    }

    /// Gives back a request counted in `slot`, if the slot still holds the client.
    pub fn give_back(
        &self,
        store: &dyn SharedStore,
        client: u64,
        receipt: Receipt,
        rule: &Rule,
        now_ms: u64,
        retries: u32,
    ) -> bool {
        let key = slot_key(self.instance, self.limit, receipt.slot);
        for _ in 0..retries.max(1) {
            let Ok(Some((bytes, version))) = store.get(&key) else {
                return false;
            };
            let Some(Entry {
                definition,
                client: holder,
                state: Some(mut state),
            }) = decode(&bytes)
            else {
                return false;
            };
            if definition != self.definition || holder != client {
                return false;
            }
            state.give_back(rule, receipt.taken, now_ms);
            match store.set(
                &key,
                &encode(definition, client, Some(&state)),
                Some(version),
            ) {
                Ok(()) => return true,
                Err(StoreError::VersionMismatch) => continue,
                Err(StoreError::Unavailable) => return false,
            }
        }
        false
    }

    /// Finds the client's slot: its own entry among the probes, else the first
    /// empty, outdated or idle one, else the one with the least budget used (evicted).
    fn locate(
        &self,
        store: &dyn SharedStore,
        client: u64,
        rule: &Rule,
        now_ms: u64,
    ) -> Result<Option<Found>, StoreError> {
        let mut free: Option<Found> = None;
        let mut oldest: Option<((u64, u64), Found)> = None;
        for step in 0..PROBES.min(self.slots) {
            let slot = self.probe(client, step);
            let key = slot_key(self.instance, self.limit, slot);
            let (entry, version) = match store.get(&key)? {
                Some((bytes, version)) => (decode(&bytes), Some(version)),
                // Never created: the table is not ready. Counting here could race
                // with its creation; take it only if nothing else is found.
                None => (None, None),
            };
            let candidate = |evicted: bool| Found {
                slot,
                version,
                state: None,
                takeover: true,
                evicted,
            };
            match entry {
                Some(entry) if entry.definition == self.definition && entry.client == client => {
                    return Ok(Some(Found {
                        slot,
                        version,
                        state: entry.state,
                        takeover: false,
                        evicted: false,
                    }));
                }
                Some(Entry {
                    definition,
                    client: holder,
                    state: Some(state),
                }) if definition == self.definition && holder != 0 => {
                    if state.is_idle(rule, now_ms) {
                        if free.is_none() {
                            free = Some(candidate(false));
                        }
                    } else {
                        // The least used budget goes first (a client being refused
                        // is never the cheap one), then the least recently active.
                        let cost = (state.load(rule, now_ms), state.last_active_ms(rule));
                        if oldest.as_ref().is_none_or(|(least, _)| cost < *least) {
                            oldest = Some((cost, candidate(true)));
                        }
                    }
                }
                _ => {
                    if free.is_none() {
                        free = Some(candidate(false));
                    }
                }
            }
        }
        Ok(free.or(oldest.map(|(_, found)| found)))
    }
}

struct Found {
    slot: u32,
    version: Option<u32>,
    state: Option<State>,
    /// The slot is taken over (empty, idle, outdated, or evicted).
    takeover: bool,
    evicted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::MemoryStore;

    const T0: u64 = 1_800_000_000_000;

    fn table(slots: u32) -> Table<'static> {
        Table {
            instance: "edge",
            limit: "per-client",
            definition: 7,
            slots,
            algorithm: Algorithm::SlidingWindow,
        }
    }

    fn rule(requests: u64) -> Rule {
        Rule {
            requests,
            window_ms: 10_000,
            burst: requests,
        }
    }

    fn admitted(counted: &Counted) -> bool {
        matches!(counted, Counted::Admitted { .. })
    }

    #[test]
    fn creation_makes_every_slot_once() {
        let store = MemoryStore::default();
        let table = table(64);
        assert_eq!(create(&store, &table), Ok(true));
        assert_eq!(store.entries.borrow().len(), 65);
        assert_eq!(create(&store, &table), Ok(false), "already there");
        let changed = Table {
            definition: 8,
            ..table
        };
        assert_eq!(create(&store, &changed), Ok(true));
        assert_eq!(store.entries.borrow().len(), 65, "the same keys again");
    }

    #[test]
    fn each_client_has_its_own_budget_even_in_a_tiny_table() {
        let store = MemoryStore::default();
        let table = table(16);
        create(&store, &table).unwrap();
        let rule = rule(3);
        // Four clients fit in the four probes of any home slot.
        let clients: Vec<u64> = (0..4).map(|n| fingerprint(1, "l", &[n])).collect();
        for client in &clients {
            let got = (0..5)
                .filter(|_| admitted(&table.count(&store, *client, &rule, T0, 4)))
                .count();
            assert_eq!(got, 3);
        }
    }

    #[test]
    fn memory_stays_at_the_table_whatever_the_number_of_clients() {
        let store = MemoryStore::default();
        let table = table(128);
        create(&store, &table).unwrap();
        let rule = rule(1);
        let mut evictions = 0;
        for n in 0u32..10_000 {
            let client = fingerprint(9, "l", &n.to_le_bytes());
            match table.count(&store, client, &rule, T0 + u64::from(n), 4) {
                Counted::Admitted { evicted, .. } => evictions += u32::from(evicted),
                other => panic!("client {n}: {other:?}"),
            }
        }
        assert_eq!(store.entries.borrow().len(), 129);
        assert!(
            evictions > 9_000,
            "the table is full of active clients: {evictions}"
        );
    }

    #[test]
    fn a_slot_is_reused_once_idle_and_never_shared() {
        let store = MemoryStore::default();
        let table = table(16);
        create(&store, &table).unwrap();
        let rule = rule(1);
        let first = fingerprint(1, "l", b"a");
        assert!(admitted(&table.count(&store, first, &rule, T0, 4)));
        assert!(!admitted(&table.count(&store, first, &rule, T0 + 1, 4)));
        // Idle after the window: another client may take the slot, and the first
        // one starts afresh elsewhere.
        let later = T0 + 20_000;
        for n in 0..64u8 {
            let other = fingerprint(1, "l", &[n, 1]);
            table.count(&store, other, &rule, later, 4);
        }
        assert!(admitted(&table.count(&store, first, &rule, later, 4)));
    }

    #[test]
    fn contention_is_retried_then_reported() {
        let store = MemoryStore::default();
        let table = table(16);
        create(&store, &table).unwrap();
        let rule = rule(5);
        let client = fingerprint(1, "l", b"a");
        store.interfere.set(3);
        assert!(admitted(&table.count(&store, client, &rule, T0, 4)));
        store.interfere.set(4);
        assert_eq!(
            table.count(&store, client, &rule, T0, 4),
            Counted::Contention
        );
    }

    #[test]
    fn an_outdated_definition_starts_afresh_and_a_given_back_request_is_returned() {
        let store = MemoryStore::default();
        let old = table(16);
        create(&store, &old).unwrap();
        let rule = rule(1);
        let client = fingerprint(1, "l", b"a");
        assert!(admitted(&old.count(&store, client, &rule, T0, 4)));
        let new = Table {
            definition: 99,
            ..old
        };
        create(&store, &new).unwrap();
        let Counted::Admitted { receipt, .. } = new.count(&store, client, &rule, T0, 4) else {
            panic!("a changed limit counts afresh");
        };
        assert!(!admitted(&new.count(&store, client, &rule, T0, 4)));
        assert!(new.give_back(&store, client, receipt, &rule, T0, 4));
        assert!(admitted(&new.count(&store, client, &rule, T0, 4)));
    }
}
