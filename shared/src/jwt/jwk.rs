//! JSON Web Key sets (RFC 7517): parsed once, when a set arrives, never per request.

use super::algorithm::{Algorithm, KeyFamily};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// Largest key set accepted, in bytes.
pub const MAX_JWKS_BYTES: usize = 1 << 20;

/// Most keys kept from one set.
pub const MAX_KEYS: usize = 64;

/// A verification key, ready to use.
#[derive(Debug, Clone)]
pub enum KeyMaterial {
    Rsa(super::rsa::RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
    /// A shared secret, only ever from a provider's configuration.
    Hmac(Vec<u8>),
}

impl KeyMaterial {
    pub fn family(&self) -> KeyFamily {
        match self {
            Self::Rsa(_) => KeyFamily::Rsa,
            Self::P256(_) => KeyFamily::P256,
            Self::P384(_) => KeyFamily::P384,
            Self::Ed25519(_) => KeyFamily::Ed25519,
            Self::Hmac(_) => KeyFamily::Hmac,
        }
    }
}

/// One key with what the set says about it.
#[derive(Debug, Clone)]
pub struct Jwk {
    pub kid: Option<String>,
    /// The algorithm the set pins the key to, if it does.
    pub alg: Option<Algorithm>,
    pub material: KeyMaterial,
}

/// The usable keys of a set.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub keys: Vec<Jwk>,
}

/// A key of the set that was left out, and why (for a log line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    pub index: usize,
    pub kid: Option<String>,
    pub reason: String,
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawKey {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    usage: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

/// Parses a JWKS document. Keys that cannot be used (unknown type or curve, RSA under
/// 2048 bits, encryption keys, symmetric keys, bad encodings) are skipped and listed;
/// the set itself is refused only when it is not a JWKS at all or has no usable key.
pub fn parse_jwks(bytes: &[u8]) -> Result<(KeySet, Vec<SkippedKey>), String> {
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(format!("key set larger than {MAX_JWKS_BYTES} bytes"));
    }
    let raw: RawSet =
        serde_json::from_slice(bytes).map_err(|error| format!("not a key set: {error}"))?;
    let mut set = KeySet::default();
    let mut skipped = Vec::new();
    for (index, value) in raw.keys.into_iter().enumerate() {
        let kid = value
            .get("kid")
            .and_then(|kid| kid.as_str())
            .map(str::to_string);
        if set.keys.len() >= MAX_KEYS {
            skipped.push(SkippedKey {
                index,
                kid,
                reason: format!("more than {MAX_KEYS} keys"),
            });
            continue;
        }
        match parse_key(value) {
            Ok(key) => set.keys.push(key),
            Err(reason) => skipped.push(SkippedKey { index, kid, reason }),
        }
    }
    if set.keys.is_empty() {
        return Err("key set has no usable key".into());
    }
    Ok((set, skipped))
}

fn parse_key(value: serde_json::Value) -> Result<Jwk, String> {
    let raw: RawKey =
        serde_json::from_value(value).map_err(|error| format!("not a key: {error}"))?;
    if raw.usage.as_deref().is_some_and(|usage| usage != "sig") {
        return Err("not a signature key".into());
    }
    let alg = match raw.alg.as_deref() {
        None => None,
        Some(name) => {
            Some(Algorithm::from_name(name).ok_or_else(|| format!("unsupported alg {name:?}"))?)
        }
    };
    let material = match raw.kty.as_str() {
        "RSA" => rsa_key(&raw)?,
        "EC" => ec_key(&raw)?,
        "OKP" => okp_key(&raw)?,
        "oct" => return Err("symmetric keys are only taken from configuration".into()),
        other => return Err(format!("unsupported key type {other:?}")),
    };
    if let Some(alg) = alg {
        if alg.family() != material.family() {
            return Err(format!("alg {} does not fit the key", alg.name()));
        }
    }
    Ok(Jwk {
        kid: raw.kid,
        alg,
        material,
    })
}

fn field(value: &Option<String>, name: &str) -> Result<Vec<u8>, String> {
    let text = value.as_deref().ok_or_else(|| format!("missing {name}"))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| format!("{name} is not base64url"))
}

fn rsa_key(raw: &RawKey) -> Result<KeyMaterial, String> {
    let key = super::rsa::RsaPublicKey::new(&field(&raw.n, "n")?, &field(&raw.e, "e")?)
        .map_err(|error| format!("bad RSA key: {error}"))?;
    let bits = key.bits() as usize;
    if bits < MIN_RSA_BITS {
        return Err(format!("RSA key of {bits} bits, under {MIN_RSA_BITS}"));
    }
    Ok(KeyMaterial::Rsa(key))
}

fn ec_key(raw: &RawKey) -> Result<KeyMaterial, String> {
    let x = field(&raw.x, "x")?;
    let y = field(&raw.y, "y")?;
    let mut point = Vec::with_capacity(1 + x.len() + y.len());
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    match raw.crv.as_deref() {
        Some("P-256") if x.len() == 32 && y.len() == 32 => {
            p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                .map(KeyMaterial::P256)
                .map_err(|_| "P-256 point not on the curve".to_string())
        }
        Some("P-384") if x.len() == 48 && y.len() == 48 => {
            p384::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                .map(KeyMaterial::P384)
                .map_err(|_| "P-384 point not on the curve".to_string())
        }
        Some("P-256" | "P-384") => Err("EC coordinates of the wrong length".into()),
        other => Err(format!("unsupported curve {other:?}")),
    }
}

fn okp_key(raw: &RawKey) -> Result<KeyMaterial, String> {
    if raw.crv.as_deref() != Some("Ed25519") {
        return Err(format!("unsupported curve {:?}", raw.crv));
    }
    let x: [u8; 32] = field(&raw.x, "x")?
        .try_into()
        .map_err(|_| "Ed25519 key of the wrong length".to_string())?;
    ed25519_dalek::VerifyingKey::from_bytes(&x)
        .map(KeyMaterial::Ed25519)
        .map_err(|_| "bad Ed25519 key".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RSA key of RFC 7515 appendix A.2.
    pub const RFC7515_RSA: &str = r#"{"kty":"RSA","kid":"rfc-rsa",
        "n":"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ",
        "e":"AQAB"}"#;

    /// The P-256 key of RFC 7515 appendix A.3.
    pub const RFC7515_EC: &str = r#"{"kty":"EC","kid":"rfc-ec","crv":"P-256",
        "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

    /// The Ed25519 key of RFC 8037 appendix A.
    pub const RFC8037_OKP: &str = r#"{"kty":"OKP","kid":"rfc-okp","crv":"Ed25519",
        "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;

    fn set(keys: &[&str]) -> String {
        format!(r#"{{"keys":[{}]}}"#, keys.join(","))
    }

    #[test]
    fn rfc_keys_are_read() {
        let (set, skipped) =
            parse_jwks(set(&[RFC7515_RSA, RFC7515_EC, RFC8037_OKP]).as_bytes()).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        let families: Vec<KeyFamily> = set.keys.iter().map(|key| key.material.family()).collect();
        assert_eq!(
            families,
            [KeyFamily::Rsa, KeyFamily::P256, KeyFamily::Ed25519]
        );
        assert_eq!(set.keys[0].kid.as_deref(), Some("rfc-rsa"));
    }

    #[test]
    fn unusable_keys_are_skipped_and_the_rest_kept() {
        // A 1024-bit modulus generated with Python's `cryptography`.
        let short_rsa = r#"{"kty":"RSA","kid":"short","e":"AQAB","n":"ld5r1nR7NMMR0qeu_SCxrjTpNJeHG06Q_9lRw_EwTL3pGM74vWghFxbGis4bVQKTEcCZtyU6rmXyhe4d1-RIVBU1dFBzCpTjqTgfIFUvQM-FkXbWffdcavxKO4VFjo6zJdUrqaCu06rrLe4DAOD1yNRYoxJlgjO-QQDndEPrUWM"}"#;
        let oct = r#"{"kty":"oct","kid":"secret","k":"c2VjcmV0"}"#;
        let encryption = RFC7515_EC.replace(r#""kty":"EC""#, r#""kty":"EC","use":"enc""#);
        let off_curve = RFC7515_EC.replace("f83OJ3D2", "AAAAAAAA");
        let unknown = r#"{"kty":"XYZ"}"#;
        let mismatched = RFC7515_EC.replace(r#""kty":"EC""#, r#""kty":"EC","alg":"RS256""#);
        let (set, skipped) = parse_jwks(
            set(&[
                short_rsa,
                oct,
                &encryption,
                &off_curve,
                unknown,
                &mismatched,
                RFC8037_OKP,
            ])
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(set.keys.len(), 1);
        assert_eq!(skipped.len(), 6, "{skipped:?}");
        assert!(skipped[0].reason.contains("under 2048"), "{skipped:?}");
    }

    #[test]
    fn garbage_is_refused() {
        for garbage in [
            &b"not json"[..],
            b"[]",
            b"{\"keys\":{}}",
            b"{\"keys\":[]}",
            b"{\"keys\":[{\"kty\":\"oct\"}]}",
        ] {
            assert!(
                parse_jwks(garbage).is_err(),
                "{}",
                String::from_utf8_lossy(garbage)
            );
        }
        let huge = vec![b' '; MAX_JWKS_BYTES + 1];
        assert!(parse_jwks(&huge).is_err());
    }
}
