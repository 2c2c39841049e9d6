//! Join tokens: HS256 JWTs minted by the business backend that owns the users.
//!
//! A token's `sub` is the name it may join as and `exp` when it stops working; an
//! optional `groups` claim lists the groups the user may subscribe to and publish in
//! (the ticker's `stock` groups stay open to everyone). Verification happens in the
//! session, on its worker thread, so the hub's thread never spends time on HMACs.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, ReplyError};

/// The claims wxhub reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The user name this token may join as.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Groups the user may subscribe to and publish in; absent means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
}

/// What a verified token allows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grant {
    /// `None`: every group. Behind a pointer: every session's pool entry holds a grant, and most
    /// allow everything, so the common case costs one word instead of a set.
    groups: Option<Arc<HashSet<String>>>,
}

impl Grant {
    /// A grant for every group (anonymous mode).
    pub fn all() -> Self {
        Grant { groups: None }
    }

    /// Whether the token lists the groups it allows (a `groups` claim). Such a token sees
    /// user names only inside those groups (docs/SECURITY.md).
    pub fn is_limited(&self) -> bool {
        self.groups.is_some()
    }

    /// Whether the token lets the user subscribe to or publish in `group` (groups whose
    /// policy is open to every token, the market data, are the router's to let in).
    pub fn allows(&self, group: &str) -> bool {
        self.groups
            .as_ref()
            .is_none_or(|groups| groups.contains(group))
    }
}

/// Checks join tokens against the hub's secret.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // Backends often add an audience; the hub has none of its own to check it against.
        validation.validate_aud = false;
        // Clocks of the backend and the hub may differ a little; the same leeway applies
        // to `exp` and to `nbf` (a token is not valid before its `nbf`, when it has one).
        validation.leeway = 30;
        validation.validate_nbf = true;
        Verifier {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// Verifies that `token` lets its bearer join as `name`.
    pub fn verify(&self, token: Option<&str>, name: &str) -> Result<Grant, ReplyError> {
        let token = token.ok_or_else(|| unauthorized("this hub requires a token to join"))?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    unauthorized("the token has expired")
                }
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    unauthorized("the token's signature is not valid")
                }
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => {
                    unauthorized("the token is not valid yet (nbf)")
                }
                _ => unauthorized("the token is not valid"),
            },
        )?;
        if data.claims.sub != name {
            return Err(unauthorized("the token was issued for another name"));
        }
        Ok(Grant {
            groups: data
                .claims
                .groups
                .map(|g| Arc::new(g.into_iter().collect())),
        })
    }
}

fn unauthorized(message: &'static str) -> ReplyError {
    ReplyError::new(ErrorCode::Unauthorized, message)
}

/// Mints a token (for `wxhub token` and tests; backends use any JWT library).
pub fn mint(
    secret: &str,
    name: &str,
    ttl: Duration,
    groups: Option<Vec<String>>,
) -> Result<String, jsonwebtoken::errors::Error> {
    let claims = Claims {
        sub: name.to_owned(),
        exp: crate::protocol::now_ms() / 1000 + ttl.as_secs(),
        groups,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cret";

    #[test]
    fn valid_token_for_its_name_only() {
        let v = Verifier::new(SECRET);
        let t = mint(SECRET, "alice", Duration::from_secs(60), None).unwrap();
        assert_eq!(v.verify(Some(&t), "alice"), Ok(Grant::all()));
        assert_eq!(
            v.verify(Some(&t), "bob").unwrap_err().code,
            ErrorCode::Unauthorized
        );
        assert_eq!(
            v.verify(None, "alice").unwrap_err().code,
            ErrorCode::Unauthorized
        );
    }

    #[test]
    fn wrong_secret_expired_and_garbage_are_refused() {
        let v = Verifier::new(SECRET);
        let other = mint("other", "alice", Duration::from_secs(60), None).unwrap();
        assert!(v.verify(Some(&other), "alice").is_err());
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: "alice".into(),
                exp: crate::protocol::now_ms() / 1000 - 3600,
                groups: None,
            },
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        let err = v.verify(Some(&expired), "alice").unwrap_err();
        assert!(err.message.contains("expired"), "{err}");
        assert!(v.verify(Some("not.a.jwt"), "alice").is_err());
        assert!(v.verify(Some(""), "alice").is_err());
    }

    #[test]
    fn a_token_is_not_valid_before_its_nbf() {
        #[derive(Serialize)]
        struct WithNbf<'a> {
            sub: &'a str,
            exp: u64,
            nbf: u64,
        }
        let now = crate::protocol::now_ms() / 1000;
        let with_nbf = |nbf: u64| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &WithNbf {
                    sub: "a",
                    exp: now + 3600,
                    nbf,
                },
                &EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap()
        };
        let v = Verifier::new(SECRET);
        let err = v.verify(Some(&with_nbf(now + 600)), "a").unwrap_err();
        assert!(err.message.contains("not valid yet"), "{err}");
        // Within the leeway, and in the past, it holds.
        assert!(v.verify(Some(&with_nbf(now + 10)), "a").is_ok());
        assert!(v.verify(Some(&with_nbf(now - 10)), "a").is_ok());
    }

    #[test]
    fn an_audience_claim_is_accepted() {
        #[derive(Serialize)]
        struct WithAud<'a> {
            sub: &'a str,
            exp: u64,
            aud: &'a str,
        }
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &WithAud {
                sub: "a",
                exp: crate::protocol::now_ms() / 1000 + 60,
                aud: "shop",
            },
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(Verifier::new(SECRET).verify(Some(&t), "a").is_ok());
    }

    #[test]
    fn groups_claim_limits_groups() {
        let v = Verifier::new(SECRET);
        let t = mint(
            SECRET,
            "a",
            Duration::from_secs(60),
            Some(vec!["sales".into()]),
        )
        .unwrap();
        let grant = v.verify(Some(&t), "a").unwrap();
        assert!(grant.allows("sales"));
        assert!(!grant.allows("hr"));
        assert!(grant.is_limited());
        assert!(Grant::all().allows("hr") && !Grant::all().is_limited());
    }
}
