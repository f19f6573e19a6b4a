//! Envoy's shared data as the policy crate's store.

use gatehouse_shared::host::{SharedStore, StoreError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

/// The process-wide shared data, through proxy-wasm.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(value), Some(version))) => Ok(Some((value, version))),
            Ok(_) => Ok(None),
            Err(_) => Err(StoreError::Unavailable),
        }
    }

    fn set(&self, key: &str, value: &[u8], version: Option<u32>) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, Some(value), version) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::VersionMismatch),
            Err(_) => Err(StoreError::Unavailable),
        }
    }
}
