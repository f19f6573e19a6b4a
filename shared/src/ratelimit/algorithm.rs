//! The two counting algorithms on plain numbers: a key's state, whether one more
//! request fits at a given millisecond, and what the client is told.
//!
//! Sliding window: the window of `W` ms is kept as `SUB_WINDOWS` sub-windows of
//! `W / SUB_WINDOWS` ms, plus the one the window's start falls in. A request is
//! admitted when the requests counted in those sub-windows are under the limit, so
//! no trailing window of `W` ever holds more than the limit: every admitted request
//! of such a window is still counted when the window's last request is checked. The
//! price is that an admitted request keeps counting until the end of the sub-window
//! in which it leaves the window (between `W` and `W + W/10` after it was admitted).
//!
//! Token bucket: `burst` tokens, full at the start, refilled continuously at
//! `requests` per `W`; a request takes one. Kept exactly in integers: one token is
//! `W` units and each millisecond adds `requests` units.

/// Sub-windows a sliding window is divided into.
pub const SUB_WINDOWS: u64 = 10;
const SLOTS: usize = SUB_WINDOWS as usize + 1;

/// A tier's rule, checked at configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Requests per window, at least 1.
    pub requests: u64,
    /// The window in ms, a multiple of 1000 (whole seconds).
    pub window_ms: u64,
    /// Sliding window: most requests in one sub-window. Token bucket: the bucket's
    /// size. At least 1.
    pub burst: u64,
}

/// Which algorithm a limit counts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    SlidingWindow,
    TokenBucket,
}

/// What one limit tells the client after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// The rule's requests per window.
    pub limit: u64,
    /// Requests still allowed now (0 when refused).
    pub remaining: u64,
    /// Milliseconds until the whole quota is available again.
    pub reset_ms: u64,
    /// Milliseconds until a refused request would be admitted (0 when admitted).
    pub retry_after_ms: u64,
}

/// One key's counting state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Window(Window),
    Bucket(Bucket),
}

/// A sliding window: counts per sub-window, the newest last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    /// The index (`ms / sub-window ms`) of the newest sub-window, `counts[SUB_WINDOWS]`.
    newest: u64,
    counts: [u32; SLOTS],
}

/// A token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Tokens times the window in ms.
    units: u64,
    /// When `units` was last brought up to date, ms since the epoch.
    updated_ms: u64,
}

/// Where an admitted request was counted, so that it can be given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// In the sub-window with this index.
    SubWindow(u64),
    /// One token.
    Token,
}

impl State {
    /// The state of a key never seen (or idle): nothing counted, a full bucket.
    pub fn fresh(algorithm: Algorithm, rule: &Rule, now_ms: u64) -> Self {
        match algorithm {
            Algorithm::SlidingWindow => Self::Window(Window {
                newest: now_ms / sub_window_ms(rule),
                counts: [0; SLOTS],
            }),
            Algorithm::TokenBucket => Self::Bucket(Bucket {
                units: capacity(rule),
                updated_ms: now_ms,
            }),
        }
    }

    /// Checks one request at `now_ms`: admitted (and counted) or refused (and not
    /// counted), with what the client is told.
    pub fn check(&mut self, rule: &Rule, now_ms: u64) -> (Option<Taken>, Quota) {
        match self {
            Self::Window(window) => window.check(rule, now_ms),
            Self::Bucket(bucket) => bucket.check(rule, now_ms),
        }
    }

    /// What the client would be told at `now_ms`, counting nothing.
    pub fn peek(&self, rule: &Rule, now_ms: u64) -> Quota {
        let mut copy = *self;
        match &mut copy {
            Self::Window(window) => {
                window.advance(rule, now_ms);
                window.quota(rule, now_ms, true)
            }
            Self::Bucket(bucket) => {
                bucket.refill(rule, now_ms);
                bucket.quota(rule, true)
            }
        }
    }

    /// Gives back a request counted by `check`, if it still counts.
    pub fn give_back(&mut self, rule: &Rule, taken: Taken, now_ms: u64) {
        match (self, taken) {
            (Self::Window(window), Taken::SubWindow(index)) => {
                window.advance(rule, now_ms);
                let oldest = window.newest.saturating_sub(SUB_WINDOWS);
                if index >= oldest && index <= window.newest {
                    let slot = usize::try_from(index - oldest).unwrap_or(0);
                    if let Some(count) = window.counts.get_mut(slot) {
                        *count = count.saturating_sub(1);
                    }
                }
            }
            (Self::Bucket(bucket), Taken::Token) => {
                bucket.refill(rule, now_ms);
                bucket.units = bucket
                    .units
                    .saturating_add(rule.window_ms)
                    .min(capacity(rule));
            }
            _ => {}
        }
    }

    /// Whether nothing is counted any more at `now_ms` (the key can be forgotten).
    pub fn is_idle(&self, rule: &Rule, now_ms: u64) -> bool {
        let mut copy = *self;
        match &mut copy {
            Self::Window(window) => {
                window.advance(rule, now_ms);
                window.counts.iter().all(|count| *count == 0)
            }
            Self::Bucket(bucket) => {
                bucket.refill(rule, now_ms);
                bucket.units >= capacity(rule)
            }
        }
    }

    /// How much of its budget a key has used at `now_ms` (requests counted, or
    /// token units missing): the key with the least is the cheapest to forget.
    pub fn load(&self, rule: &Rule, now_ms: u64) -> u64 {
        let mut copy = *self;
        match &mut copy {
            Self::Window(window) => {
                window.advance(rule, now_ms);
                window.counted()
            }
            Self::Bucket(bucket) => {
                bucket.refill(rule, now_ms);
                capacity(rule).saturating_sub(bucket.units) / rule.window_ms.max(1)
            }
        }
    }

    /// The newest moment the state was touched, for choosing what to forget.
    pub fn last_active_ms(&self, rule: &Rule) -> u64 {
        match self {
            Self::Window(window) => window.newest.saturating_mul(sub_window_ms(rule)),
            Self::Bucket(bucket) => bucket.updated_ms,
        }
    }

    /// The state's bytes (little-endian).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Window(window) => {
                out.push(1);
                out.extend_from_slice(&window.newest.to_le_bytes());
                for count in window.counts {
                    out.extend_from_slice(&count.to_le_bytes());
                }
            }
            Self::Bucket(bucket) => {
                out.push(2);
                out.extend_from_slice(&bucket.units.to_le_bytes());
                out.extend_from_slice(&bucket.updated_ms.to_le_bytes());
            }
        }
    }

    /// Reads what `encode` wrote; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (kind, rest) = bytes.split_first()?;
        let u64_at = |offset: usize| -> Option<u64> {
            let chunk: [u8; 8] = rest.get(offset..offset + 8)?.try_into().ok()?;
            Some(u64::from_le_bytes(chunk))
        };
        match kind {
            1 if rest.len() == 8 + 4 * SLOTS => {
                let mut counts = [0u32; SLOTS];
                for (index, count) in counts.iter_mut().enumerate() {
                    let offset = 8 + 4 * index;
                    let chunk: [u8; 4] = rest.get(offset..offset + 4)?.try_into().ok()?;
                    *count = u32::from_le_bytes(chunk);
                }
                Some(Self::Window(Window {
                    newest: u64_at(0)?,
                    counts,
                }))
            }
            2 if rest.len() == 16 => Some(Self::Bucket(Bucket {
                units: u64_at(0)?,
                updated_ms: u64_at(8)?,
            })),
            _ => None,
        }
    }
}

fn sub_window_ms(rule: &Rule) -> u64 {
    (rule.window_ms / SUB_WINDOWS).max(1)
}

fn capacity(rule: &Rule) -> u64 {
    rule.burst.saturating_mul(rule.window_ms)
}

fn div_ceil(numerator: u64, denominator: u64) -> u64 {
    numerator.div_ceil(denominator.max(1))
}

impl Window {
    /// Moves the window to `now_ms`, dropping the sub-windows that left it. A clock
    /// a little behind another worker's counts into the newest sub-window.
    fn advance(&mut self, rule: &Rule, now_ms: u64) {
        let current = now_ms / sub_window_ms(rule);
        if current <= self.newest {
            return;
        }
        let shift = current - self.newest;
        if shift >= SLOTS as u64 {
            self.counts = [0; SLOTS];
        } else {
            let shift = usize::try_from(shift).unwrap_or(SLOTS);
            self.counts.rotate_left(shift);
            for count in &mut self.counts[SLOTS - shift..] {
                *count = 0;
            }
        }
        self.newest = current;
    }

    fn counted(&self) -> u64 {
        self.counts.iter().map(|count| u64::from(*count)).sum()
    }

    fn check(&mut self, rule: &Rule, now_ms: u64) -> (Option<Taken>, Quota) {
        self.advance(rule, now_ms);
        let newest = self.counts[SLOTS - 1];
        if self.counted() < rule.requests && u64::from(newest) < rule.burst {
            self.counts[SLOTS - 1] = newest.saturating_add(1);
            (
                Some(Taken::SubWindow(self.newest)),
                self.quota(rule, now_ms, true),
            )
        } else {
            (None, self.quota(rule, now_ms, false))
        }
    }

    /// The moment (ms) the sub-window at `slot` stops counting.
    fn release_ms(&self, rule: &Rule, slot: usize) -> u64 {
        (self.newest + slot as u64 + 1).saturating_mul(sub_window_ms(rule))
    }

    fn quota(&self, rule: &Rule, now_ms: u64, admitted: bool) -> Quota {
        let counted = self.counted();
        let reset_ms = self
            .counts
            .iter()
            .rposition(|count| *count > 0)
            .map_or(0, |slot| self.release_ms(rule, slot).saturating_sub(now_ms));
        let retry_after_ms = if admitted {
            0
        } else {
            // The window frees its oldest sub-windows first; the sub-window cap
            // frees when the newest one ends.
            let mut left = counted;
            let mut window_free = now_ms;
            for (slot, count) in self.counts.iter().enumerate() {
                if left < rule.requests {
                    break;
                }
                left -= u64::from(*count);
                window_free = self.release_ms(rule, slot);
            }
            let burst_free = if u64::from(self.counts[SLOTS - 1]) >= rule.burst {
                (self.newest + 1).saturating_mul(sub_window_ms(rule))
            } else {
                now_ms
            };
            window_free.max(burst_free).saturating_sub(now_ms).max(1)
        };
        Quota {
            limit: rule.requests,
            remaining: if admitted {
                rule.requests.saturating_sub(counted)
            } else {
                0
            },
            reset_ms,
            retry_after_ms,
        }
    }
}

impl Bucket {
    fn refill(&mut self, rule: &Rule, now_ms: u64) {
        if now_ms <= self.updated_ms {
            return;
        }
        let elapsed = u128::from(now_ms - self.updated_ms);
        let added = elapsed.saturating_mul(u128::from(rule.requests));
        let units = u128::from(self.units).saturating_add(added);
        self.units = u64::try_from(units.min(u128::from(capacity(rule)))).unwrap_or(u64::MAX);
        self.updated_ms = now_ms;
    }

    fn check(&mut self, rule: &Rule, now_ms: u64) -> (Option<Taken>, Quota) {
        self.refill(rule, now_ms);
        if self.units >= rule.window_ms {
            self.units -= rule.window_ms;
            (Some(Taken::Token), self.quota(rule, true))
        } else {
            (None, self.quota(rule, false))
        }
    }

    fn quota(&self, rule: &Rule, admitted: bool) -> Quota {
        let missing_for_one = rule.window_ms.saturating_sub(self.units);
        Quota {
            limit: rule.requests,
            remaining: if admitted {
                self.units / rule.window_ms.max(1)
            } else {
                0
            },
            reset_ms: div_ceil(capacity(rule).saturating_sub(self.units), rule.requests),
            retry_after_ms: if admitted {
                0
            } else {
                div_ceil(missing_for_one, rule.requests).max(1)
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000_000;

    fn rule(requests: u64, window_seconds: u64) -> Rule {
        Rule {
            requests,
            window_ms: window_seconds * 1000,
            burst: requests,
        }
    }

    fn admitted(state: &mut State, rule: &Rule, now_ms: u64, count: u64) -> u64 {
        (0..count)
            .filter(|_| state.check(rule, now_ms).0.is_some())
            .count() as u64
    }

    #[test]
    fn a_sliding_window_admits_the_limit_then_frees_sub_window_by_sub_window() {
        // 10 per 10 s: sub-windows of 1 s. T0 is on a sub-window boundary.
        let rule = rule(10, 10);
        let mut state = State::fresh(Algorithm::SlidingWindow, &rule, T0);
        assert_eq!(admitted(&mut state, &rule, T0 + 500, 4), 4);
        assert_eq!(admitted(&mut state, &rule, T0 + 3_200, 6), 6);
        let (taken, quota) = state.check(&rule, T0 + 3_300);
        assert_eq!(taken, None);
        // The four of sub-window 0 stop counting when sub-window 11 begins (T0 + 11 s).
        assert_eq!(quota.retry_after_ms, T0 + 11_000 - (T0 + 3_300));
        // All ten have left at the end of sub-window 3 + 11 (T0 + 14 s).
        assert_eq!(quota.reset_ms, T0 + 14_000 - (T0 + 3_300));
        assert_eq!(quota.remaining, 0);

        // One millisecond before the release: still full.
        assert_eq!(admitted(&mut state, &rule, T0 + 10_999, 1), 0);
        // At the release exactly four come back.
        assert_eq!(admitted(&mut state, &rule, T0 + 11_000, 10), 4);
        // The six of sub-window 3 come back at T0 + 14 s.
        assert_eq!(admitted(&mut state, &rule, T0 + 13_999, 1), 0);
        assert_eq!(admitted(&mut state, &rule, T0 + 14_000, 10), 6);
    }

    #[test]
    fn no_trailing_window_ever_holds_more_than_the_limit() {
        // Requests at pseudo-random moments; every admitted time is kept and every
        // trailing window of 10 s is checked.
        let rule = rule(7, 10);
        let mut state = State::fresh(Algorithm::SlidingWindow, &rule, T0);
        let mut generator = crate::host::SplitMix64::new(42);
        let mut now = T0;
        let mut times = Vec::new();
        for _ in 0..20_000 {
            now += generator.next_u64() % 700;
            if state.check(&rule, now).0.is_some() {
                times.push(now);
            }
        }
        for (index, end) in times.iter().enumerate() {
            let inside = times[..=index]
                .iter()
                .filter(|time| **time + rule.window_ms > *end)
                .count();
            assert!(inside <= 7, "{inside} in the window ending {end}");
        }
        // And it is not needlessly strict: a request frees its place at most one
        // sub-window late, so at least 7 per 11 s are admitted.
        let lower = (now - T0) * 7 / 11_000 - 7;
        assert!(times.len() as u64 >= lower, "{} < {lower}", times.len());
    }

    #[test]
    fn the_sub_window_cap_spreads_a_burst() {
        let rule = Rule {
            requests: 10,
            window_ms: 10_000,
            burst: 3,
        };
        let mut state = State::fresh(Algorithm::SlidingWindow, &rule, T0);
        assert_eq!(admitted(&mut state, &rule, T0 + 100, 10), 3);
        let (_, quota) = state.check(&rule, T0 + 200);
        assert_eq!(
            quota.retry_after_ms, 800,
            "the next sub-window begins at T0 + 1 s"
        );
        assert_eq!(admitted(&mut state, &rule, T0 + 1_000, 10), 3);
    }

    #[test]
    fn a_token_bucket_refills_continuously() {
        // 2 per 4 s: one token every 2 s; a bucket of 2.
        let rule = rule(2, 4);
        let mut state = State::fresh(Algorithm::TokenBucket, &rule, T0);
        let (_, first) = state.check(&rule, T0);
        assert_eq!(first.remaining, 1);
        assert_eq!(first.reset_ms, 2_000);
        assert_eq!(admitted(&mut state, &rule, T0, 1), 1);
        let (taken, refused) = state.check(&rule, T0 + 500);
        assert_eq!(taken, None);
        assert_eq!(refused.retry_after_ms, 1_500);
        assert_eq!(refused.reset_ms, 3_500);
        assert_eq!(admitted(&mut state, &rule, T0 + 1_999, 1), 0);
        assert_eq!(admitted(&mut state, &rule, T0 + 2_000, 1), 1);
        // Long idle: full, never more.
        assert_eq!(admitted(&mut state, &rule, T0 + 600_000, 5), 2);
    }

    #[test]
    fn a_slow_bucket_loses_no_refill_to_rounding() {
        // 1 per hour, checked every second: exactly one token per hour.
        let rule = rule(1, 3600);
        let mut state = State::fresh(Algorithm::TokenBucket, &rule, T0);
        let mut got = 0;
        for second in 0..=7200 {
            got += admitted(&mut state, &rule, T0 + second * 1000, 1);
        }
        assert_eq!(got, 3, "the full bucket, then one at 1 h and one at 2 h");
    }

    #[test]
    fn given_back_requests_count_no_more() {
        let rule = rule(2, 10);
        for algorithm in [Algorithm::SlidingWindow, Algorithm::TokenBucket] {
            let mut state = State::fresh(algorithm, &rule, T0);
            let (taken, _) = state.check(&rule, T0);
            let taken = taken.unwrap();
            state.give_back(&rule, taken, T0 + 1);
            assert_eq!(admitted(&mut state, &rule, T0 + 2, 5), 2, "{algorithm:?}");
        }
    }

    #[test]
    fn states_round_trip_and_idle_is_recognized() {
        let rule = rule(5, 10);
        for algorithm in [Algorithm::SlidingWindow, Algorithm::TokenBucket] {
            let mut state = State::fresh(algorithm, &rule, T0);
            assert!(state.is_idle(&rule, T0));
            state.check(&rule, T0 + 10);
            let mut bytes = Vec::new();
            state.encode(&mut bytes);
            assert_eq!(State::decode(&bytes), Some(state));
            assert!(!state.is_idle(&rule, T0 + 20));
            assert!(state.is_idle(&rule, T0 + 12_000), "{algorithm:?}");
            assert_eq!(State::decode(&bytes[..bytes.len() - 1]), None);
        }
        assert_eq!(State::decode(&[]), None);
        assert_eq!(State::decode(&[9, 1, 2]), None);
    }

    #[test]
    fn a_clock_slightly_behind_counts_into_the_newest_sub_window() {
        let rule = rule(3, 10);
        let mut state = State::fresh(Algorithm::SlidingWindow, &rule, T0 + 5_000);
        assert_eq!(admitted(&mut state, &rule, T0 + 5_000, 2), 2);
        assert_eq!(admitted(&mut state, &rule, T0 + 4_900, 5), 1);
    }
}
