//! One request: decide at once, or wait for keys.

use crate::apply::{decide_and_apply, Applied};
use crate::state::{SharedState, Waiter};
use gatehouse_host::HostClock;
use gatehouse_shared::auth::KeyWait;
use gatehouse_shared::host::Clock;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

pub struct AuthStream {
    context_id: u32,
    state: SharedState,
}

impl AuthStream {
    pub fn new(context_id: u32, state: SharedState) -> Self {
        Self { context_id, state }
    }
}

impl Context for AuthStream {}

impl HttpContext for AuthStream {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let headers = self.get_http_request_headers_bytes();
        let now_ms = HostClock.now_millis();
        let mut state = self.state.borrow_mut();
        match decide_and_apply(&mut state, &headers, now_ms, KeyWait::Refetch) {
            Applied::Continue => Action::Continue,
            Applied::Responded => Action::Pause,
            // A flood of tokens during a key outage cannot pile up paused streams
            // without bound.
            Applied::Wait { .. } if state.waiters.len() >= state.settings.max_waiting_requests => {
                state.metrics.key_wait_timeouts.add(1);
                // Decided as if the wait had run out: a token naming an unknown
                // key is refused as such, and without keys the 503 applies as the
                // rule's mode says.
                match decide_and_apply(&mut state, &headers, now_ms, KeyWait::Never) {
                    Applied::Continue => Action::Continue,
                    _ => Action::Pause,
                }
            }
            Applied::Wait { provider, refetch } => {
                state.metrics.key_waits.add(1);
                if refetch {
                    if let Some(provider) = state.providers.get_mut(&provider) {
                        provider.refetch_wanted = true;
                    }
                }
                let generation = state.generation(&provider);
                let deadline_ms = now_ms.saturating_add(state.settings.key_wait_ms);
                state.waiters.push(Waiter {
                    context_id: self.context_id,
                    provider,
                    deadline_ms,
                    generation,
                });
                Action::Pause
            }
        }
    }

    fn on_log(&mut self) {
        // A request that ends while waiting (the client gave up) is forgotten.
        let context_id = self.context_id;
        if let Ok(mut state) = self.state.try_borrow_mut() {
            state
                .waiters
                .retain(|waiter| waiter.context_id != context_id);
        }
    }
}
