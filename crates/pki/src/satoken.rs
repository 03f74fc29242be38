//! Service-account tokens: the key that signs them (`<data-dir>/tls/service-account.key`)
//! and compact JWS encoding and checking with ES256, the format upstream's TokenRequest
//! issues (`kubectl create token`) and its authenticator accepts.
//!
//! The key is separate from the CA so it can be rotated or shared between API servers
//! without touching TLS.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use serde_json::{Value, json};

use crate::Error;
use crate::files;

const PEM_LABEL: &str = "PRIVATE KEY";

/// Why a presented token is not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url parts with JSON header and claims.
    #[error("malformed token")]
    Malformed,
    /// Signed by another key or with another algorithm.
    #[error("invalid token signature")]
    BadSignature,
    /// Past `exp` or before `nbf`.
    #[error("token is expired or not yet valid")]
    Expired,
}

/// Signs and verifies service-account tokens.
pub struct TokenSigner {
    key_pair: EcdsaKeyPair,
    key_id: String,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// Load the signing key from `path`, creating it on first start.
    pub fn load_or_create(path: &Path) -> Result<TokenSigner, Error> {
        let rng = SystemRandom::new();
        let pem = files::read_or_create_secret(path, || {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .expect("the system random source works");
            let body = STANDARD.encode(pkcs8.as_ref());
            let lines: Vec<&str> = body
                .as_bytes()
                .chunks(64)
                .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
                .collect();
            format!(
                "-----BEGIN {PEM_LABEL}-----\n{}\n-----END {PEM_LABEL}-----",
                lines.join("\n")
            )
        })?;
        let bad = |reason: &str| Error::BadPem {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let body: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .concat();
        let der = STANDARD
            .decode(body.trim())
            .map_err(|_| bad("not base64"))?;
        let key_pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
            .map_err(|_| bad("not a PKCS#8 P-256 key"))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, key_pair.public_key().as_ref());
        let key_id = URL_SAFE_NO_PAD.encode(digest.as_ref());
        Ok(TokenSigner { key_pair, key_id })
    }

    /// The `kid` header of issued tokens (a hash of the public key).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// A signed token carrying `claims`.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({ "alg": "ES256", "kid": self.key_id });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key_pair
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .expect("ECDSA signing with a valid key does not fail");
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }

    /// The claims of a token this key signed, if it is valid at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<Value, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| TokenError::Malformed)
        };
        let header: Value =
            serde_json::from_slice(&decode(header)?).map_err(|_| TokenError::Malformed)?;
        if header["alg"] != "ES256" {
            return Err(TokenError::BadSignature);
        }
        let signing_input = &token[..token.len() - signature.len() - 1];
        UnparsedPublicKey::new(
            &ECDSA_P256_SHA256_FIXED,
            self.key_pair.public_key().as_ref(),
        )
        .verify(signing_input.as_bytes(), &decode(signature)?)
        .map_err(|_| TokenError::BadSignature)?;
        let claims: Value =
            serde_json::from_slice(&decode(claims)?).map_err(|_| TokenError::Malformed)?;
        let exp = claims["exp"].as_i64().unwrap_or(i64::MAX);
        let nbf = claims["nbf"].as_i64().unwrap_or(i64::MIN);
        if now >= exp || now < nbf {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_tampering_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("service-account.key");
        let signer = TokenSigner::load_or_create(&path).unwrap();
        let claims = json!({ "sub": "system:serviceaccount:default:app", "nbf": 100, "exp": 200 });
        let token = signer.sign(&claims);
        assert_eq!(signer.verify(&token, 150).unwrap(), claims);
        assert_eq!(signer.verify(&token, 200), Err(TokenError::Expired));
        assert_eq!(signer.verify(&token, 99), Err(TokenError::Expired));

        // The same key after a restart verifies old tokens.
        let reloaded = TokenSigner::load_or_create(&path).unwrap();
        assert_eq!(reloaded.key_id(), signer.key_id());
        assert!(reloaded.verify(&token, 150).is_ok());

        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(
            json!({ "sub": "system:serviceaccount:kube-system:admin", "nbf": 100, "exp": 200 })
                .to_string(),
        );
        assert_eq!(
            signer.verify(&parts.join("."), 150),
            Err(TokenError::BadSignature)
        );
        assert_eq!(signer.verify("a.b", 150), Err(TokenError::Malformed));

        let other = TokenSigner::load_or_create(&dir.path().join("other.key")).unwrap();
        assert_eq!(other.verify(&token, 150), Err(TokenError::BadSignature));
    }
}
