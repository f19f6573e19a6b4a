//! Which address is the client's: the connection's peer, or an address a trusted
//! proxy wrote into `x-forwarded-for`.

use std::net::{IpAddr, SocketAddr};

/// Most trusted proxy hops a configuration may name.
pub const MAX_TRUSTED_HOPS: u32 = 10;

/// Where the client address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressSource {
    /// The peer of the connection (no trusted hops, or too few forwarded entries).
    Peer,
    /// An entry of `x-forwarded-for` written by a trusted proxy.
    Forwarded,
}

/// The client's address and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddress {
    pub ip: Option<IpAddr>,
    pub source: AddressSource,
}

/// Decides the client address.
///
/// `trusted_hops` is the number of proxies in front of the gateway that append the
/// address they received a connection from to `x-forwarded-for`. With 0 the peer of
/// the connection is the client. With N the client is the Nth entry from the right:
/// entries further left were written by the client itself and cannot be trusted.
/// When the header has fewer than N entries, or the entry is not an address, the
/// peer is used, so a client cannot choose its address by sending a header.
///
/// `peer` is Envoy's `source.address` (`ip:port`); `forwarded_for` holds every
/// `x-forwarded-for` header of the request in order.
pub fn resolve(peer: &str, forwarded_for: &[&str], trusted_hops: u32) -> ClientAddress {
    let from_peer = ClientAddress {
        ip: parse_address(peer),
        source: AddressSource::Peer,
    };
    if trusted_hops == 0 {
        return from_peer;
    }
    let entries: Vec<&str> = forwarded_for
        .iter()
        .flat_map(|header| header.split(','))
        .map(str::trim)
        .collect();
    let Some(index) = entries.len().checked_sub(trusted_hops as usize) else {
        return from_peer;
    };
    match entries.get(index).and_then(|entry| parse_address(entry)) {
        Some(ip) => ClientAddress {
            ip: Some(ip),
            source: AddressSource::Forwarded,
        },
        None => from_peer,
    }
}

/// Reads `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]` or `[::1]:80`.
pub fn parse_address(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(socket) = text.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    text.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn without_trusted_hops_the_peer_is_the_client() {
        let address = resolve("10.0.0.9:5000", &["1.1.1.1"], 0);
        assert_eq!(address.ip, ip("10.0.0.9"));
        assert_eq!(address.source, AddressSource::Peer);
    }

    #[test]
    fn trusted_hops_count_from_the_right() {
        let xff = ["6.6.6.6, 203.0.113.7", "10.1.1.1"];
        assert_eq!(resolve("10.0.0.2:1", &xff, 1).ip, ip("10.1.1.1"));
        assert_eq!(resolve("10.0.0.2:1", &xff, 2).ip, ip("203.0.113.7"));
        assert_eq!(resolve("10.0.0.2:1", &xff, 3).ip, ip("6.6.6.6"));
    }

    #[test]
    fn spoofed_entries_on_the_left_do_not_move_the_client() {
        let honest = resolve("10.0.0.2:1", &["203.0.113.7"], 1);
        let spoofed = resolve("10.0.0.2:1", &["1.2.3.4, 5.6.7.8, 203.0.113.7"], 1);
        assert_eq!(honest.ip, spoofed.ip);
    }

    #[test]
    fn too_few_entries_or_garbage_fall_back_to_the_peer() {
        for xff in [vec![], vec!["203.0.113.7"], vec!["junk, 203.0.113.7"]] {
            let address = resolve("[2001:db8::1]:443", &xff, 2);
            assert_eq!(address.ip, ip("2001:db8::1"), "{xff:?}");
            assert_eq!(address.source, AddressSource::Peer);
        }
    }

    #[test]
    fn address_forms_are_read() {
        for (text, expected) in [
            ("1.2.3.4", "1.2.3.4"),
            ("1.2.3.4:80", "1.2.3.4"),
            ("::1", "::1"),
            ("[::1]", "::1"),
            ("[2001:db8::1]:8080", "2001:db8::1"),
        ] {
            assert_eq!(parse_address(text), ip(expected), "{text}");
        }
        assert_eq!(parse_address("example.com"), None);
    }
}
