//! Claim checks (RFC 7519 section 4.1) and identity extraction.

use super::TokenError;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// What a provider requires of a token's claims.
#[derive(Debug, Clone)]
pub struct ClaimPolicy {
    /// Exact `iss` (no case folding, no trailing-slash games).
    pub issuer: String,
    /// Accepted audiences; the token's `aud` (string or array) must name one. Empty
    /// means `aud` is not checked.
    pub audiences: Vec<String>,
    /// Whether `exp` must be present.
    pub require_exp: bool,
    /// Allowed clock difference, in seconds.
    pub clock_skew_seconds: u64,
    /// Longest accepted `exp - iat` (or `exp - now` without `iat`), in seconds.
    pub max_lifetime_seconds: Option<u64>,
    /// Claims that must be present.
    pub required_claims: Vec<String>,
}

/// The payload's claims, with duplicate names refused.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claims(pub BTreeMap<String, Value>);

impl<'de> serde::Deserialize<'de> for Claims {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ClaimsVisitor;

        impl<'de> Visitor<'de> for ClaimsVisitor {
            type Value = Claims;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a JSON object of claims")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Claims, A::Error> {
                let mut claims = BTreeMap::new();
                while let Some((name, value)) = access.next_entry::<String, Value>()? {
                    if claims.insert(name, value).is_some() {
                        return Err(de::Error::custom("duplicate claim"));
                    }
                }
                Ok(Claims(claims))
            }
        }

        deserializer.deserialize_map(ClaimsVisitor)
    }
}

impl Claims {
    /// Parses a verified payload: a JSON object with no repeated claim.
    pub fn parse(payload: &[u8]) -> Result<Self, TokenError> {
        serde_json::from_slice(payload).map_err(|_| TokenError::MalformedClaims)
    }

    /// A NumericDate claim: an integer number of seconds; anything else is malformed.
    fn seconds(&self, name: &str) -> Result<Option<i64>, TokenError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::Number(number)) => {
                number.as_i64().map(Some).ok_or(TokenError::MalformedClaims)
            }
            Some(_) => Err(TokenError::MalformedClaims),
        }
    }

    /// Checks the claims against `policy` at `now` (seconds since the epoch).
    ///
    /// Valid while `now <= exp + skew`; not before `nbf - skew`; `iat` no later than
    /// `now + skew`.
    pub fn check(&self, policy: &ClaimPolicy, now: i64) -> Result<(), TokenError> {
        let skew = i64::try_from(policy.clock_skew_seconds).unwrap_or(i64::MAX);
        let exp = self.seconds("exp")?;
        let nbf = self.seconds("nbf")?;
        let iat = self.seconds("iat")?;

        match exp {
            None if policy.require_exp => return Err(TokenError::MissingClaim),
            Some(exp) if now > exp.saturating_add(skew) => return Err(TokenError::Expired),
            _ => {}
        }
        if nbf.is_some_and(|nbf| nbf.saturating_sub(skew) > now) {
            return Err(TokenError::NotYetValid);
        }
        if iat.is_some_and(|iat| iat > now.saturating_add(skew)) {
            return Err(TokenError::IssuedInFuture);
        }
        if let (Some(max), Some(exp)) = (policy.max_lifetime_seconds, exp) {
            let start = iat.unwrap_or(now);
            let max = i64::try_from(max).unwrap_or(i64::MAX);
            if exp.saturating_sub(start) > max {
                return Err(TokenError::LifetimeTooLong);
            }
        }

        match self.0.get("iss") {
            Some(Value::String(issuer)) if *issuer == policy.issuer => {}
            None => return Err(TokenError::MissingClaim),
            Some(_) => return Err(TokenError::IssuerMismatch),
        }
        if !policy.audiences.is_empty() {
            let matches = |audience: &Value| {
                audience.as_str().is_some_and(|audience| {
                    policy.audiences.iter().any(|accepted| accepted == audience)
                })
            };
            match self.0.get("aud") {
                None => return Err(TokenError::MissingClaim),
                Some(Value::String(_)) if self.0.get("aud").is_some_and(matches) => {}
                Some(Value::Array(list))
                    if list.iter().all(Value::is_string) && list.iter().any(matches) => {}
                Some(_) => return Err(TokenError::AudienceMismatch),
            }
        }
        if policy
            .required_claims
            .iter()
            .any(|claim| !self.0.contains_key(claim))
        {
            return Err(TokenError::MissingClaim);
        }
        Ok(())
    }

    /// The value at a dotted path (`realm_access.roles`).
    pub fn at(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let mut value = self.0.get(parts.next()?)?;
        for part in parts {
            value = value.get(part)?;
        }
        Some(value)
    }

    /// A string claim at `path` (numbers are not ids).
    pub fn string_at(&self, path: &str) -> Option<String> {
        self.at(path).and_then(Value::as_str).map(str::to_string)
    }

    /// Roles at `path`: an array of strings, or one space-separated string (`scope`).
    pub fn roles_at(&self, path: &str) -> Vec<String> {
        match self.at(path) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Some(Value::String(text)) => text.split_whitespace().map(str::to_string).collect(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_314_409;

    fn policy() -> ClaimPolicy {
        ClaimPolicy {
            issuer: "https://idp.example".into(),
            audiences: vec!["https://api.example".into()],
            require_exp: true,
            clock_skew_seconds: 60,
            max_lifetime_seconds: Some(3600),
            required_claims: vec!["sub".into()],
        }
    }

    fn claims(json: &str) -> Claims {
        Claims::parse(json.as_bytes()).unwrap()
    }

    fn with(extra: &str) -> String {
        format!(
            r#"{{"iss":"https://idp.example","aud":"https://api.example","sub":"u1","iat":{NOW},{extra}}}"#
        )
    }

    #[test]
    fn good_claims_pass() {
        assert_eq!(
            claims(&with(&format!(r#""exp":{}"#, NOW + 600))).check(&policy(), NOW),
            Ok(())
        );
        let array = format!(
            r#"{{"iss":"https://idp.example","aud":["x","https://api.example"],"sub":"u","exp":{}}}"#,
            NOW + 5
        );
        assert_eq!(claims(&array).check(&policy(), NOW), Ok(()));
    }

    #[test]
    fn expiry_holds_to_the_skew_boundary_and_not_one_second_past() {
        let token = claims(&with(&format!(r#""exp":{}"#, NOW - 60)));
        assert_eq!(token.check(&policy(), NOW), Ok(()));
        assert_eq!(token.check(&policy(), NOW + 1), Err(TokenError::Expired));
    }

    #[test]
    fn time_claims_are_checked() {
        let cases = [
            (
                format!(r#""exp":{},"nbf":{}"#, NOW + 600, NOW + 61),
                TokenError::NotYetValid,
            ),
            (
                format!(r#""exp":{},"nbf":{}"#, NOW + 600, NOW + 60),
                TokenError::IssuedInFuture,
            ),
            (
                format!(r#""exp":{}"#, NOW + 3601),
                TokenError::LifetimeTooLong,
            ),
            (
                r#""exp":"9999999999""#.to_string(),
                TokenError::MalformedClaims,
            ),
            (
                format!(r#""exp":{}.5"#, NOW + 10),
                TokenError::MalformedClaims,
            ),
            (r#""exp":-1"#.to_string(), TokenError::Expired),
            (
                r#""exp":99999999999999999999"#.to_string(),
                TokenError::MalformedClaims,
            ),
            (
                r#""exp":9223372036854775807"#.to_string(),
                TokenError::LifetimeTooLong,
            ),
        ];
        for (extra, error) in cases {
            // `iat` in the future for the nbf+60 case: make iat follow nbf.
            let json = if extra.contains("nbf") && error == TokenError::IssuedInFuture {
                format!(
                    r#"{{"iss":"https://idp.example","aud":"https://api.example","sub":"u","iat":{},{extra}}}"#,
                    NOW + 61
                )
            } else {
                with(&extra)
            };
            assert_eq!(claims(&json).check(&policy(), NOW), Err(error), "{json}");
        }
    }

    #[test]
    fn issuer_and_audience_must_match_exactly() {
        let exp = NOW + 60;
        let cases = [
            (
                format!(
                    r#"{{"iss":"https://IDP.example","aud":"https://api.example","sub":"u","exp":{exp}}}"#
                ),
                TokenError::IssuerMismatch,
            ),
            (
                format!(
                    r#"{{"iss":"https://idp.example/","aud":"https://api.example","sub":"u","exp":{exp}}}"#
                ),
                TokenError::IssuerMismatch,
            ),
            (
                format!(
                    r#"{{"iss":["https://idp.example"],"aud":"https://api.example","sub":"u","exp":{exp}}}"#
                ),
                TokenError::IssuerMismatch,
            ),
            (
                format!(r#"{{"aud":"https://api.example","sub":"u","exp":{exp}}}"#),
                TokenError::MissingClaim,
            ),
            (
                format!(
                    r#"{{"iss":"https://idp.example","aud":"https://api.example/","sub":"u","exp":{exp}}}"#
                ),
                TokenError::AudienceMismatch,
            ),
            (
                format!(r#"{{"iss":"https://idp.example","aud":7,"sub":"u","exp":{exp}}}"#),
                TokenError::AudienceMismatch,
            ),
            (
                format!(
                    r#"{{"iss":"https://idp.example","aud":["https://api.example",7],"sub":"u","exp":{exp}}}"#
                ),
                TokenError::AudienceMismatch,
            ),
            (
                format!(r#"{{"iss":"https://idp.example","sub":"u","exp":{exp}}}"#),
                TokenError::MissingClaim,
            ),
            (
                format!(
                    r#"{{"iss":"https://idp.example","aud":"https://api.example","exp":{exp}}}"#
                ),
                TokenError::MissingClaim,
            ),
            (
                r#"{"iss":"https://idp.example","aud":"https://api.example","sub":"u"}"#
                    .to_string(),
                TokenError::MissingClaim,
            ),
        ];
        for (json, error) in cases {
            assert_eq!(claims(&json).check(&policy(), NOW), Err(error), "{json}");
        }
    }

    #[test]
    fn payloads_that_are_not_one_claim_set_are_refused() {
        for payload in [
            &b"[]"[..],
            b"\"x\"",
            b"{\"sub\":\"a\",\"sub\":\"b\"}",
            b"{",
            b"\xff\xfe",
        ] {
            assert_eq!(
                Claims::parse(payload),
                Err(TokenError::MalformedClaims),
                "{payload:?}"
            );
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(
            Claims::parse(deep.as_bytes()),
            Err(TokenError::MalformedClaims)
        );
    }

    #[test]
    fn identity_comes_from_claim_paths() {
        let token = claims(
            r#"{"sub":"u1","scope":"read write","realm_access":{"roles":["admin","user"]},"plan":{"tier":"pro"}}"#,
        );
        assert_eq!(token.string_at("sub").as_deref(), Some("u1"));
        assert_eq!(token.roles_at("realm_access.roles"), ["admin", "user"]);
        assert_eq!(token.roles_at("scope"), ["read", "write"]);
        assert_eq!(token.string_at("plan.tier").as_deref(), Some("pro"));
        assert!(token.roles_at("missing").is_empty());
    }
}
