//! JSON Web Tokens: key sets, signature verification and claim checks.
//!
//! Everything here is strict on purpose: a token is refused unless every part of it
//! is exactly what RFC 7515/7519 allow and the provider's configuration expects. The
//! refusal reason is machine-readable, for the audit record; it never contains the
//! token, a key or a secret.

mod algorithm;
mod claims;
mod jwk;
mod token;

pub use algorithm::Algorithm;
pub use claims::{ClaimPolicy, Claims};
pub use jwk::{parse_jwks, Jwk, KeyMaterial, KeySet, SkippedKey};
pub use token::{decode_header, verify, Header, MAX_TOKEN_BYTES};

/// Why a token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token_malformed")]
    Malformed,
    #[error("algorithm_unsupported")]
    UnsupportedAlgorithm,
    #[error("algorithm_not_allowed")]
    AlgorithmNotAllowed,
    #[error("critical_header_unknown")]
    UnknownCriticalHeader,
    #[error("key_unknown")]
    UnknownKey,
    #[error("key_algorithm_mismatch")]
    KeyAlgorithmMismatch,
    #[error("signature_invalid")]
    BadSignature,
    #[error("claims_malformed")]
    MalformedClaims,
    #[error("token_expired")]
    Expired,
    #[error("token_not_yet_valid")]
    NotYetValid,
    #[error("token_issued_in_future")]
    IssuedInFuture,
    #[error("token_lifetime_too_long")]
    LifetimeTooLong,
    #[error("claim_missing")]
    MissingClaim,
    #[error("issuer_mismatch")]
    IssuerMismatch,
    #[error("audience_mismatch")]
    AudienceMismatch,
}

impl TokenError {
    /// The reason as it appears in the audit record.
    pub fn reason(self) -> String {
        self.to_string()
    }
}
