//! Envoy's response flags: the bit set the host reports as `response.flags`, named
//! with the short codes of Envoy's `%RESPONSE_FLAGS%`.

/// Bit positions of Envoy's core response flags (Envoy 1.40), lowest bit first.
const CODES: [&str; 30] = [
    "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC",
    "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR",
    "UDO",
];

/// The short codes of every flag set in `bits`; unknown bits as `0x...`.
pub fn response_flag_codes(bits: u64) -> Vec<String> {
    let mut codes = Vec::new();
    for position in 0..64 {
        let bit = 1u64 << position;
        if bits & bit == 0 {
            continue;
        }
        match CODES.get(position) {
            Some(code) => codes.push((*code).to_string()),
            None => codes.push(format!("0x{bit:x}")),
        }
    }
    codes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_named_by_bit() {
        assert!(response_flag_codes(0).is_empty());
        assert_eq!(response_flag_codes(0x100), ["NR"]);
        assert_eq!(response_flag_codes(0x40 | 0x4000), ["UC", "DC"]);
        assert_eq!(response_flag_codes(1 << 40), ["0x10000000000"]);
    }
}
