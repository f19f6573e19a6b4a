//! Compact JWS parsing and signature verification.

use super::algorithm::Algorithm;
use super::jwk::{Jwk, KeyMaterial, KeySet};
use super::TokenError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Longest protected header accepted, in bytes after decoding.
pub const MAX_HEADER_BYTES: usize = 4 * 1024;

/// The protected header, as far as verification needs it. Other members (`jwk`,
/// `jku`, `x5u`, `x5c`, ...) are ignored: keys come only from the provider.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Header {
    pub alg: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub crit: Option<Vec<String>>,
}

/// The three parts of a compact token, decoded.
struct Parts<'a> {
    signing_input: &'a [u8],
    header: Header,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

fn decode(part: &str) -> Result<Vec<u8>, TokenError> {
    if part.is_empty() {
        return Err(TokenError::Malformed);
    }
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)
}

fn split(token: &str) -> Result<Parts<'_>, TokenError> {
    if token.len() > MAX_TOKEN_BYTES || !token.is_ascii() {
        return Err(TokenError::Malformed);
    }
    let mut pieces = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (pieces.next(), pieces.next(), pieces.next(), pieces.next())
    else {
        return Err(TokenError::Malformed);
    };
    let signing_input = &token.as_bytes()[..header.len() + 1 + payload.len()];
    let header_bytes = decode(header)?;
    if header_bytes.len() > MAX_HEADER_BYTES {
        return Err(TokenError::Malformed);
    }
    // serde would also read a struct from a JSON array; a header is an object.
    if header_bytes.iter().find(|byte| !byte.is_ascii_whitespace()) != Some(&b'{') {
        return Err(TokenError::Malformed);
    }
    let header: Header =
        serde_json::from_slice(&header_bytes).map_err(|_| TokenError::Malformed)?;
    Ok(Parts {
        signing_input,
        header,
        payload: decode(payload)?,
        signature: decode(signature)?,
    })
}

/// Verifies the token's signature with a key of `keys` under one of `allowed`, and
/// returns its payload (the claims, still unchecked).
///
/// The header's `alg` must name an allowed algorithm; a key is chosen by `kid`, or,
/// without one, must be the only key of the right kind; a key pinned to an algorithm
/// must be used with that algorithm; `crit` is refused, since no extension is
/// understood.
pub fn verify(token: &str, keys: &KeySet, allowed: &[Algorithm]) -> Result<Vec<u8>, TokenError> {
    let parts = split(token)?;
    let algorithm =
        Algorithm::from_name(&parts.header.alg).ok_or(TokenError::UnsupportedAlgorithm)?;
    if !allowed.contains(&algorithm) {
        return Err(TokenError::AlgorithmNotAllowed);
    }
    if parts.header.crit.is_some() {
        return Err(TokenError::UnknownCriticalHeader);
    }
    let key = select_key(keys, parts.header.kid.as_deref(), algorithm)?;
    check_signature(
        &key.material,
        algorithm,
        parts.signing_input,
        &parts.signature,
    )?;
    Ok(parts.payload)
}

fn select_key<'k>(
    keys: &'k KeySet,
    kid: Option<&str>,
    algorithm: Algorithm,
) -> Result<&'k Jwk, TokenError> {
    let key = match kid {
        Some(kid) => keys
            .keys
            .iter()
            .find(|key| key.kid.as_deref() == Some(kid))
            .ok_or(TokenError::UnknownKey)?,
        None => {
            let mut fitting = keys
                .keys
                .iter()
                .filter(|key| key.material.family() == algorithm.family());
            match (fitting.next(), fitting.next()) {
                (Some(key), None) => key,
                _ => return Err(TokenError::UnknownKey),
            }
        }
    };
    if key.material.family() != algorithm.family()
        || key.alg.is_some_and(|pinned| pinned != algorithm)
    {
        return Err(TokenError::KeyAlgorithmMismatch);
    }
    Ok(key)
}

fn check_signature(
    key: &KeyMaterial,
    algorithm: Algorithm,
    message: &[u8],
    signature: &[u8],
) -> Result<(), TokenError> {
    use p256::ecdsa::signature::Verifier;
    let bad = |_| TokenError::BadSignature;
    match (key, algorithm) {
        (KeyMaterial::Rsa(key), Algorithm::RS256) => {
            checked(key.verify_pkcs1v15::<sha2::Sha256>(message, signature))
        }
        (KeyMaterial::Rsa(key), Algorithm::RS384) => {
            checked(key.verify_pkcs1v15::<sha2::Sha384>(message, signature))
        }
        (KeyMaterial::Rsa(key), Algorithm::RS512) => {
            checked(key.verify_pkcs1v15::<sha2::Sha512>(message, signature))
        }
        (KeyMaterial::Rsa(key), Algorithm::PS256) => {
            checked(key.verify_pss::<sha2::Sha256>(message, signature, 32))
        }
        (KeyMaterial::Rsa(key), Algorithm::PS384) => {
            checked(key.verify_pss::<sha2::Sha384>(message, signature, 48))
        }
        (KeyMaterial::Rsa(key), Algorithm::PS512) => {
            checked(key.verify_pss::<sha2::Sha512>(message, signature, 64))
        }
        (KeyMaterial::P256(key), Algorithm::ES256) => {
            let signature = p256::ecdsa::Signature::from_slice(signature).map_err(bad)?;
            key.verify(message, &signature).map_err(bad)
        }
        (KeyMaterial::P384(key), Algorithm::ES384) => {
            let signature = p384::ecdsa::Signature::from_slice(signature).map_err(bad)?;
            key.verify(message, &signature).map_err(bad)
        }
        (KeyMaterial::Ed25519(key), Algorithm::EdDSA) => {
            let signature = ed25519_dalek::Signature::from_slice(signature).map_err(bad)?;
            key.verify_strict(message, &signature).map_err(bad)
        }
        (KeyMaterial::Hmac(secret), Algorithm::HS256) => {
            hmac_check::<sha2::Sha256>(secret, message, signature)
        }
        (KeyMaterial::Hmac(secret), Algorithm::HS384) => {
            hmac_check::<sha2::Sha384>(secret, message, signature)
        }
        (KeyMaterial::Hmac(secret), Algorithm::HS512) => {
            hmac_check::<sha2::Sha512>(secret, message, signature)
        }
        _ => Err(TokenError::KeyAlgorithmMismatch),
    }
}

fn checked(valid: bool) -> Result<(), TokenError> {
    if valid {
        Ok(())
    } else {
        Err(TokenError::BadSignature)
    }
}

fn hmac_check<D>(secret: &[u8], message: &[u8], signature: &[u8]) -> Result<(), TokenError>
where
    D: sha2::Digest + sha2::digest::core_api::BlockSizeUser + Clone,
    hmac::SimpleHmac<D>: hmac::Mac,
{
    use hmac::Mac;
    let mut mac = <hmac::SimpleHmac<D> as Mac>::new_from_slice(secret)
        .map_err(|_| TokenError::BadSignature)?;
    mac.update(message);
    // verify_slice compares in constant time.
    mac.verify_slice(signature)
        .map_err(|_| TokenError::BadSignature)
}
