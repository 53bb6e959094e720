//! Verifies a JWT (HS256, RS256 or EdDSA, the algorithm fixed by the key) and yields a WebSocket connection's identity: user, allowed rooms; with identify and authenticate hooks for ws_handler.
//!
//! [`ws_identity_jwt`] checks one token against a [`JwtAuth`] and returns the
//! [`Identity`] it proves: the user from the `sub` claim, the rooms from the
//! `rooms` claim ([`Identity::allowed_rooms`]: exact names or `prefix*`), and
//! any claims named with [`JwtAuth::metadata_claim`] in
//! [`Identity::metadata`]. What is checked:
//!
//! - **the algorithm is the key's**: [`JwtAuth::hs256`] accepts only HS256,
//!   [`JwtAuth::rs256_pem`] only RS256, [`JwtAuth::eddsa_pem`] only EdDSA
//!   (Ed25519). `alg: none` and any other algorithm (such as HS256 signed
//!   with an RSA public key as the secret) are refused;
//! - **the signature**;
//! - **`exp` is required**; it and `nbf` (checked when present) allow
//!   [`JwtAuth::leeway`] of clock skew (default 30 s, whole seconds);
//! - **`aud`**: when [`JwtAuth::audience`] is set the claim is required and
//!   must be one of them; when it is not set, a token that names an audience
//!   is refused (RFC 7519 §4.1.3: a token for someone else);
//! - **`iss`**: when [`JwtAuth::issuer`] is set the claim is required and
//!   must be one of them;
//! - **the user claim** (`sub`, [`JwtAuth::user_claim`]) is required: a
//!   non-empty string or an integer.
//!
//! Keys are checked when built: an HS256 secret of at least 32 bytes (RFC
//! 7518 §3.2), an RSA public key of at least 2048 bits, an Ed25519 public key;
//! a private key PEM is refused (give the public half).
//!
//! Token sources, for [`ws_handler`](ws_handler::ws_handler):
//!
//! - [`JwtAuth::identify_hook`] reads the upgrade request: an
//!   `Authorization: Bearer <jwt>` header (scheme in any case), else a
//!   `?token=<jwt>` query parameter (browsers cannot set headers on a
//!   WebSocket). No token: anonymous ([`Identity::default`]) when
//!   [`JwtAuth::allow_anonymous`] is set, else `401` with
//!   `WWW-Authenticate: Bearer`. A bad token is always `401` with
//!   `WWW-Authenticate: Bearer error="invalid_token",
//!   error_description="..."` and a one-line body naming why (`token
//!   expired`, `token not yet valid`, `bad signature`, `wrong audience`,
//!   `malformed token`, ...), before upgrading.
//! - [`JwtAuth::authenticate_hook`] reads the connection's first message,
//!   `{"type":"authenticate","token":"<jwt>"}`; anything else, a bad token,
//!   or a token for another user than the identify hook established, closes
//!   the connection with `1008` and the reason.
//!
//! Backend: jsonwebtoken's pure-Rust `rust_crypto`, not `aws_lc_rs` (a C build), for build time on 2 cores.
//!
//! # Example
//!
//! ```
//! use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
//! use serde_json::json;
//! use ws_identity_jwt::{JwtAuth, JwtError, ws_identity_jwt};
//!
//! let secret = b"a secret of at least thirty-two bytes";
//! let auth = JwtAuth::hs256(secret)?.audience("chat");
//!
//! let claims = json!({
//!     "sub": "ana",
//!     "aud": "chat",
//!     "exp": get_current_timestamp() + 600,
//!     "rooms": ["public-*", "team-7"],
//! });
//! let token = encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret)?)?;
//!
//! let identity = ws_identity_jwt(&auth, &token)?;
//! assert_eq!(identity.user.as_deref(), Some("ana"));
//! assert!(identity.allows_room("public-lobby"));
//! assert!(!identity.allows_room("team-8"));
//!
//! // Another audience is refused.
//! let other = JwtAuth::hs256(secret)?.audience("billing");
//! assert_eq!(ws_identity_jwt(&other, &token), Err(JwtError::Audience));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Wired into a WebSocket route:
//!
//! ```
//! use ws_handler::{WsConfig, ws_handler};
//! use ws_hub::{HubConfig, WsHub};
//! use ws_identity_jwt::JwtAuth;
//!
//! let auth = JwtAuth::hs256(b"a secret of at least thirty-two bytes")?
//!     .audience("chat")
//!     .issuer("https://id.example.com");
//! let hub = WsHub::new(HubConfig::default());
//! let handler = ws_handler(hub, WsConfig {
//!     identify: Some(auth.identify_hook()),
//!     ..WsConfig::default()
//! });
//! # let _ = handler;
//! # Ok::<(), ws_identity_jwt::JwtError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::future::ready;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::WWW_AUTHENTICATE;
use http::{HeaderValue, StatusCode};
use http_types::{Request, Response, bearer, query_values, text};
use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use ws_handler::{AuthenticateHook, IdentifyHook, authenticate, identify};
use ws_hub::Identity;

/// The default of [`JwtAuth::leeway`].
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// The shortest HS256 secret [`JwtAuth::hs256`] takes: 32 bytes, the size
/// of the hash output (RFC 7518 §3.2).
pub const MIN_HS256_SECRET: usize = 32;

/// The smallest RSA modulus [`JwtAuth::rs256_pem`] takes, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// The longest token read, in bytes; longer is [`JwtError::Malformed`]
/// before any decoding.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// How tokens are verified: the key (which fixes the algorithm) and the
/// claims checks. Build it with [`JwtAuth::hs256`], [`JwtAuth::rs256_pem`]
/// or [`JwtAuth::eddsa_pem`], then the settings. Each hook takes one: clone
/// it to make both.
#[derive(Clone)]
pub struct JwtAuth {
    key: DecodingKey,
    algorithm: Algorithm,
    validation: Validation,
    user_claim: String,
    rooms_claim: String,
    metadata_claims: Vec<String>,
    allow_anonymous: bool,
}

/// Why a token (or a request, or a key) was refused. `Display` is a short
/// phrase, safe to send to the client: it never repeats the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// The key cannot be used: an unreadable or private-key PEM, a key of
    /// another type, an HS256 secret under [`MIN_HS256_SECRET`] bytes, an
    /// RSA key under [`MIN_RSA_BITS`], or no jsonwebtoken crypto backend.
    Key(String),
    /// No token: no `Authorization: Bearer` header and no `?token=`.
    Missing,
    /// Not a JWT: not three base64url parts, invalid JSON, claims that are
    /// not an object, an unsupported `crit` header, longer than
    /// [`MAX_TOKEN_LEN`], or more than one token in the request.
    Malformed,
    /// The header's `alg` is not the key's algorithm (`none`, or a switch
    /// such as HS256 against an RSA key).
    Algorithm,
    /// The signature does not verify with the key.
    Signature,
    /// `exp` is past, by more than the leeway.
    Expired,
    /// `nbf` is in the future, by more than the leeway.
    NotYetValid,
    /// `aud` is not an accepted audience, or the token names one and no
    /// audience is set.
    Audience,
    /// `iss` is not an accepted issuer.
    Issuer,
    /// A required claim is absent: `exp`, `aud` or `iss` when set, the user
    /// claim.
    MissingClaim(String),
    /// A claim has the wrong type or value: `exp` or `nbf` not a number,
    /// an empty user, rooms that are not an array of strings.
    InvalidClaim(String),
    /// The first message's token is for another user than the identify
    /// hook established for the connection.
    OtherUser,
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtError::Key(why) => write!(f, "unusable key: {why}"),
            JwtError::Missing => f.write_str("no token"),
            JwtError::Malformed => f.write_str("malformed token"),
            JwtError::Algorithm => f.write_str("algorithm not allowed"),
            JwtError::Signature => f.write_str("bad signature"),
            JwtError::Expired => f.write_str("token expired"),
            JwtError::NotYetValid => f.write_str("token not yet valid"),
            JwtError::Audience => f.write_str("wrong audience"),
            JwtError::Issuer => f.write_str("wrong issuer"),
            JwtError::MissingClaim(claim) => write!(f, "missing claim {claim}"),
            JwtError::InvalidClaim(claim) => write!(f, "invalid claim {claim}"),
            JwtError::OtherUser => f.write_str("token is for another user"),
        }
    }
}

impl std::error::Error for JwtError {}

/// Verifies `token` with `auth` and returns the identity it proves: the
/// user claim as [`Identity::user`], the rooms claim (when present) as
/// [`Identity::allowed_rooms`], the metadata claims as
/// [`Identity::metadata`].
pub fn ws_identity_jwt(auth: &JwtAuth, token: &str) -> Result<Identity, JwtError> {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed);
    }
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &auth.key, &auth.validation)
        .map_err(|e| auth.refusal(e.kind(), token))?;
    auth.identity(&data.claims)
}

impl JwtAuth {
    /// HS256 with a shared secret of at least [`MIN_HS256_SECRET`] bytes.
    pub fn hs256(secret: &[u8]) -> Result<Self, JwtError> {
        if secret.len() < MIN_HS256_SECRET {
            return Err(JwtError::Key(format!(
                "an HS256 secret needs at least {MIN_HS256_SECRET} bytes, this one has {}",
                secret.len()
            )));
        }
        let key = DecodingKey::from_secret(secret).map_err(|e| key_error("HS256 secret", &e))?;
        JwtAuth::with_key(key, Algorithm::HS256)
    }

    /// RS256 with an RSA public key in PEM (`PUBLIC KEY` or `RSA PUBLIC
    /// KEY`), of at least [`MIN_RSA_BITS`] bits.
    pub fn rs256_pem(pem: &[u8]) -> Result<Self, JwtError> {
        refuse_private(pem)?;
        let key = DecodingKey::from_rsa_pem(pem).map_err(|e| key_error("RSA public key", &e))?;
        let provider = provider()?;
        let der = key
            .try_get_as_bytes()
            .map_err(|e| key_error("RSA public key", &e))?;
        let (n, _) = (provider.key_utils.rsa_pub_components_from_public_key)(der)
            .map_err(|e| key_error("RSA public key", &e))?;
        let bits = modulus_bits(&n);
        if bits < MIN_RSA_BITS {
            return Err(JwtError::Key(format!(
                "an RSA key needs at least {MIN_RSA_BITS} bits, this one has {bits}"
            )));
        }
        JwtAuth::with_key(key, Algorithm::RS256)
    }

    /// EdDSA with an Ed25519 public key in PEM (`PUBLIC KEY`).
    pub fn eddsa_pem(pem: &[u8]) -> Result<Self, JwtError> {
        refuse_private(pem)?;
        let key = DecodingKey::from_ed_pem(pem).map_err(|e| key_error("Ed25519 public key", &e))?;
        // jsonwebtoken slices the first 32 bytes when verifying: check first.
        if key.try_get_as_bytes().map(<[u8]>::len) != Ok(32) {
            return Err(JwtError::Key("not an Ed25519 public key".to_string()));
        }
        JwtAuth::with_key(key, Algorithm::EdDSA)
    }

    fn with_key(key: DecodingKey, algorithm: Algorithm) -> Result<Self, JwtError> {
        let provider = provider()?;
        (provider.verifier_factory)(&algorithm, &key)
            .map_err(|e| key_error("the verifying key", &e))?;
        let mut validation = Validation::new(algorithm);
        validation.leeway = DEFAULT_LEEWAY.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_required_spec_claims(&["exp"]);
        Ok(JwtAuth {
            key,
            algorithm,
            validation,
            user_claim: "sub".to_string(),
            rooms_claim: "rooms".to_string(),
            metadata_claims: Vec::new(),
            allow_anonymous: false,
        })
    }

    /// Accepts tokens whose `aud` is `aud` (call again to accept several);
    /// once set, `aud` is required.
    #[must_use]
    pub fn audience(mut self, aud: impl Into<String>) -> Self {
        self.validation
            .aud
            .get_or_insert_with(Default::default)
            .insert(aud.into());
        self.validation
            .required_spec_claims
            .insert("aud".to_string());
        self
    }

    /// Accepts tokens whose `iss` is `iss` (call again to accept several);
    /// once set, `iss` is required.
    #[must_use]
    pub fn issuer(mut self, iss: impl Into<String>) -> Self {
        self.validation
            .iss
            .get_or_insert_with(Default::default)
            .insert(iss.into());
        self.validation
            .required_spec_claims
            .insert("iss".to_string());
        self
    }

    /// Clock skew allowed on `exp` and `nbf`, in whole seconds (a fraction
    /// is dropped). Default: [`DEFAULT_LEEWAY`], 30 s.
    #[must_use]
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.validation.leeway = leeway.as_secs();
        self
    }

    /// The claim holding the user id. Default: `sub`.
    #[must_use]
    pub fn user_claim(mut self, name: impl Into<String>) -> Self {
        self.user_claim = name.into();
        self
    }

    /// The claim holding the allowed rooms (an array of exact names or
    /// `prefix*`). Default: `rooms`. A token without it says nothing about
    /// rooms ([`Identity::allowed_rooms`] is `None`).
    #[must_use]
    pub fn rooms_claim(mut self, name: impl Into<String>) -> Self {
        self.rooms_claim = name.into();
        self
    }

    /// Copies claim `name`, when present, into [`Identity::metadata`] under
    /// the same name: strings as they are, numbers and booleans as text,
    /// arrays and objects as JSON. Default: none.
    #[must_use]
    pub fn metadata_claim(mut self, name: impl Into<String>) -> Self {
        self.metadata_claims.push(name.into());
        self
    }

    /// Whether [`JwtAuth::identify_hook`] lets a request without a token in
    /// as anonymous ([`Identity::default`]) instead of answering `401`. A
    /// bad token is refused either way. Default: false.
    #[must_use]
    pub fn allow_anonymous(mut self, allow: bool) -> Self {
        self.allow_anonymous = allow;
        self
    }

    /// The hook for [`WsConfig::identify`](ws_handler::WsConfig::identify):
    /// the token from `Authorization: Bearer`, else `?token=`; see the crate
    /// docs for the answers.
    pub fn identify_hook(self) -> IdentifyHook {
        let auth = Arc::new(self);
        identify(move |req: &Request| ready(auth.identify(req).map_err(|e| unauthorized(&e))))
    }

    /// The hook for
    /// [`WsConfig::authenticate`](ws_handler::WsConfig::authenticate): the
    /// first message must be `{"type":"authenticate","token":"<jwt>"}`;
    /// anything else closes with `1008` and the reason.
    pub fn authenticate_hook(self) -> AuthenticateHook {
        let auth = Arc::new(self);
        authenticate(move |before: &Identity, msg: Message| {
            ready(auth.authenticate(before, &msg).map_err(|why| CloseFrame {
                code: CloseCode::Policy,
                reason: close_reason(why).into(),
            }))
        })
    }

    /// The identity of an upgrade request.
    fn identify(&self, req: &Request) -> Result<Identity, JwtError> {
        match bearer_token(req)? {
            Some(token) => ws_identity_jwt(self, &token),
            None if self.allow_anonymous => Ok(Identity::default()),
            None => Err(JwtError::Missing),
        }
    }

    /// The identity a first message proves, or the close reason.
    fn authenticate(&self, before: &Identity, msg: &Message) -> Result<Identity, String> {
        const EXPECTED: &str = r#"first message must be {"type":"authenticate","token":"<jwt>"}"#;
        let Message::Text(text) = msg else {
            return Err(EXPECTED.to_string());
        };
        if text.len() > MAX_TOKEN_LEN + 1024 {
            return Err(JwtError::Malformed.to_string());
        }
        let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(text.as_str()) else {
            return Err(EXPECTED.to_string());
        };
        if fields.get("type").and_then(Value::as_str) != Some("authenticate") {
            return Err(EXPECTED.to_string());
        }
        let Some(token) = fields.get("token").and_then(Value::as_str) else {
            return Err(EXPECTED.to_string());
        };
        let identity = ws_identity_jwt(self, token).map_err(|e| e.to_string())?;
        if before.user.is_some() && before.user != identity.user {
            return Err(JwtError::OtherUser.to_string());
        }
        Ok(identity)
    }

    /// The identity in verified claims.
    fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, JwtError> {
        let user = match claims.get(&self.user_claim) {
            None | Some(Value::Null) => {
                return Err(JwtError::MissingClaim(self.user_claim.clone()));
            }
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            Some(_) => return Err(JwtError::InvalidClaim(self.user_claim.clone())),
        };
        let allowed_rooms = match claims.get(&self.rooms_claim) {
            None | Some(Value::Null) => None,
            Some(Value::Array(rooms)) => Some(
                rooms
                    .iter()
                    .map(|r| r.as_str().map(str::to_string))
                    .collect::<Option<Vec<String>>>()
                    .ok_or_else(|| JwtError::InvalidClaim(self.rooms_claim.clone()))?,
            ),
            Some(_) => return Err(JwtError::InvalidClaim(self.rooms_claim.clone())),
        };
        let mut metadata = BTreeMap::new();
        for name in &self.metadata_claims {
            let value = match claims.get(name) {
                None | Some(Value::Null) => continue,
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            metadata.insert(name.clone(), value);
        }
        Ok(Identity {
            user: Some(user),
            metadata,
            allowed_rooms,
        })
    }

    /// Why jsonwebtoken refused `token`.
    fn refusal(&self, kind: &ErrorKind, token: &str) -> JwtError {
        match kind {
            ErrorKind::InvalidSignature => JwtError::Signature,
            ErrorKind::InvalidAlgorithm
            | ErrorKind::MissingAlgorithm
            | ErrorKind::UnsupportedAlgorithm
            | ErrorKind::InvalidAlgorithmName => JwtError::Algorithm,
            ErrorKind::ExpiredSignature => JwtError::Expired,
            ErrorKind::ImmatureSignature => JwtError::NotYetValid,
            ErrorKind::InvalidAudience => JwtError::Audience,
            ErrorKind::InvalidIssuer => JwtError::Issuer,
            ErrorKind::MissingRequiredClaim(claim) => JwtError::MissingClaim(claim.clone()),
            ErrorKind::InvalidClaimFormat(claim) => JwtError::InvalidClaim(claim.clone()),
            ErrorKind::InvalidSubject => JwtError::InvalidClaim("sub".to_string()),
            ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidKeyFormat => JwtError::Key(kind_text(kind)),
            // A header jsonwebtoken cannot read: an algorithm it does not
            // know (`none`) is still an algorithm refusal.
            _ if self.foreign_alg(token) => JwtError::Algorithm,
            _ => JwtError::Malformed,
        }
    }

    /// Whether the token's header names an algorithm other than the key's.
    fn foreign_alg(&self, token: &str) -> bool {
        let header = token.split('.').next().unwrap_or_default();
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(header.trim_end_matches('=')) else {
            return false;
        };
        let Ok(Value::Object(header)) = serde_json::from_slice::<Value>(&bytes) else {
            return false;
        };
        match header.get("alg") {
            Some(Value::String(alg)) => alg != alg_name(self.algorithm),
            Some(_) => true,
            None => false,
        }
    }
}

impl fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sorted = |set: &Option<std::collections::HashSet<String>>| {
            set.as_ref().map(|s| {
                let mut v: Vec<&String> = s.iter().collect();
                v.sort();
                v.into_iter().cloned().collect::<Vec<String>>()
            })
        };
        f.debug_struct("JwtAuth")
            .field("algorithm", &self.algorithm)
            .field("key", &"[redacted]")
            .field("audience", &sorted(&self.validation.aud))
            .field("issuer", &sorted(&self.validation.iss))
            .field("leeway_secs", &self.validation.leeway)
            .field("user_claim", &self.user_claim)
            .field("rooms_claim", &self.rooms_claim)
            .field("metadata_claims", &self.metadata_claims)
            .field("allow_anonymous", &self.allow_anonymous)
            .finish()
    }
}

/// The process's jsonwebtoken backend; none when both or neither of its
/// backend features are on and the app installed none.
fn provider() -> Result<&'static CryptoProvider, JwtError> {
    CryptoProvider::try_get_default().ok_or_else(|| {
        JwtError::Key(
            "jsonwebtoken has no crypto backend: enable exactly one of `rust_crypto` and `aws_lc_rs`, or install one".to_string(),
        )
    })
}

fn key_error(what: &str, e: &jsonwebtoken::errors::Error) -> JwtError {
    JwtError::Key(format!("not a usable {what}: {}", kind_text(e.kind())))
}

fn kind_text(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidRsaKey(why) => format!("invalid RSA key ({why})"),
        ErrorKind::InvalidEddsaKey => "invalid EdDSA key".to_string(),
        ErrorKind::InvalidEcdsaKey => "invalid ECDSA key".to_string(),
        ErrorKind::InvalidKeyFormat => "unreadable key".to_string(),
        other => format!("{other:?}"),
    }
}

/// A private key handed where the public one belongs.
fn refuse_private(pem: &[u8]) -> Result<(), JwtError> {
    let text = String::from_utf8_lossy(pem);
    let label = text
        .split("-----BEGIN ")
        .nth(1)
        .and_then(|rest| rest.split("-----").next())
        .unwrap_or_default();
    if label.contains("PRIVATE") {
        return Err(JwtError::Key(
            "a private key: give the public key (openssl pkey -pubout)".to_string(),
        ));
    }
    Ok(())
}

fn modulus_bits(n: &[u8]) -> usize {
    let n = match n.iter().position(|&b| b != 0) {
        Some(i) => &n[i..],
        None => return 0,
    };
    n.len() * 8 - n[0].leading_zeros() as usize
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::RS256 => "RS256",
        Algorithm::EdDSA => "EdDSA",
        _ => "",
    }
}

/// The bearer token of a request: `Authorization: Bearer`, else `?token=`.
fn bearer_token(req: &Request) -> Result<Option<String>, JwtError> {
    let found = bearer(req)
        .map_err(|_| JwtError::Malformed)?
        .map(str::to_string);
    if found.is_some() {
        return Ok(found);
    }
    let mut tokens = query_values(req.uri().query().unwrap_or_default(), "token");
    let first = tokens.next();
    if tokens.next().is_some() || first.as_deref() == Some("") {
        return Err(JwtError::Malformed);
    }
    Ok(first)
}

/// The `401` for a request without a good token (RFC 6750 §3).
fn unauthorized(e: &JwtError) -> Response {
    let mut res = text(StatusCode::UNAUTHORIZED, format!("{e}\n"));
    let challenge = match e {
        JwtError::Missing => "Bearer".to_string(),
        _ => format!(
            "Bearer error=\"invalid_token\", error_description=\"{}\"",
            quotable(&e.to_string())
        ),
    };
    let value = HeaderValue::from_str(&challenge)
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_token\""));
    res.headers_mut().insert(WWW_AUTHENTICATE, value);
    res
}

/// `why`, cut to the 123 bytes a close reason may hold.
fn close_reason(mut why: String) -> String {
    if why.len() > 123 {
        let mut end = 123;
        while !why.is_char_boundary(end) {
            end -= 1;
        }
        why.truncate(end);
    }
    why
}

/// `s` with what an `error_description` may not hold (RFC 6750 §3: no `"`
/// or `\`, printable ASCII) replaced by `?`.
fn quotable(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            ' ' | '!' | '#'..='[' | ']'..='~' => c,
            _ => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode, get_current_timestamp};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const RSA_PRIVATE: &[u8] = include_bytes!("../tests/keys/rsa_private.pem");
    const RSA_PUBLIC: &[u8] = include_bytes!("../tests/keys/rsa_public.pem");
    const ED_PRIVATE: &[u8] = include_bytes!("../tests/keys/ed25519_private.pem");
    const ED_PUBLIC: &[u8] = include_bytes!("../tests/keys/ed25519_public.pem");
    const ED_OTHER_PRIVATE: &[u8] = include_bytes!("../tests/keys/ed25519_other_private.pem");

    fn now() -> u64 {
        get_current_timestamp()
    }

    fn hs(claims: &Value) -> String {
        let key = EncodingKey::from_secret(SECRET).unwrap();
        encode(&Header::new(Algorithm::HS256), claims, &key).unwrap()
    }

    fn claims(user: &str) -> Value {
        json!({"sub": user, "exp": now() + 600})
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn hs256_verifies_and_yields_the_user_a_configured_user_claim_and_metadata() {
        let auth = JwtAuth::hs256(SECRET).unwrap();
        let id = ws_identity_jwt(&auth, &hs(&claims("ana"))).unwrap();
        assert_eq!(id, Identity::user("ana"));
        assert_eq!(id.allowed_rooms, None);

        let auth = auth.user_claim("uid").metadata_claim("tenant");
        let token = hs(&json!({"uid": 42, "tenant": "acme", "exp": now() + 60}));
        let id = ws_identity_jwt(&auth, &token).unwrap();
        assert_eq!(id.user.as_deref(), Some("42"));
        assert_eq!(id.metadata.get("tenant").map(String::as_str), Some("acme"));
        // The user claim is required and must be a string or an integer.
        assert_eq!(
            ws_identity_jwt(&auth, &hs(&json!({"exp": now() + 60}))),
            Err(JwtError::MissingClaim("uid".into()))
        );
        assert_eq!(
            ws_identity_jwt(&auth, &hs(&json!({"uid": "", "exp": now() + 60}))),
            Err(JwtError::InvalidClaim("uid".into()))
        );
    }

    #[test]
    fn keys_are_checked_when_built_short_secrets_private_pems_wrong_key_types() {
        assert!(matches!(JwtAuth::hs256(b"short"), Err(JwtError::Key(_))));
        assert!(matches!(JwtAuth::hs256(b""), Err(JwtError::Key(_))));
        assert!(matches!(
            JwtAuth::rs256_pem(RSA_PRIVATE),
            Err(JwtError::Key(_))
        ));
        assert!(matches!(
            JwtAuth::rs256_pem(ED_PUBLIC),
            Err(JwtError::Key(_))
        ));
        assert!(matches!(
            JwtAuth::rs256_pem(b"not a pem"),
            Err(JwtError::Key(_))
        ));
        assert!(matches!(
            JwtAuth::eddsa_pem(ED_PRIVATE),
            Err(JwtError::Key(_))
        ));
        assert!(matches!(
            JwtAuth::eddsa_pem(RSA_PUBLIC),
            Err(JwtError::Key(_))
        ));
        let auth = JwtAuth::rs256_pem(RSA_PUBLIC).unwrap();
        assert!(!format!("{auth:?}").contains("BEGIN"));
    }

    #[test]
    fn rs256_verifies_and_refuses_a_changed_signature() {
        let auth = JwtAuth::rs256_pem(RSA_PUBLIC).unwrap();
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
        let token = encode(&Header::new(Algorithm::RS256), &claims("bo"), &key).unwrap();
        assert_eq!(ws_identity_jwt(&auth, &token), Ok(Identity::user("bo")));

        // Flip one bit in the middle of the signature.
        let (message, signature) = token.rsplit_once('.').unwrap();
        let mut sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
        sig[10] ^= 1;
        let forged = format!("{message}.{}", URL_SAFE_NO_PAD.encode(sig));
        assert_eq!(ws_identity_jwt(&auth, &forged), Err(JwtError::Signature));
    }

    #[test]
    fn eddsa_verifies_and_refuses_a_token_signed_by_another_key() {
        let auth = JwtAuth::eddsa_pem(ED_PUBLIC).unwrap();
        let key = EncodingKey::from_ed_pem(ED_PRIVATE).unwrap();
        let token = encode(&Header::new(Algorithm::EdDSA), &claims("cy"), &key).unwrap();
        assert_eq!(ws_identity_jwt(&auth, &token), Ok(Identity::user("cy")));

        let other = EncodingKey::from_ed_pem(ED_OTHER_PRIVATE).unwrap();
        let token = encode(&Header::new(Algorithm::EdDSA), &claims("cy"), &other).unwrap();
        assert_eq!(ws_identity_jwt(&auth, &token), Err(JwtError::Signature));
    }

    #[test]
    fn a_wrong_hs256_secret_is_a_bad_signature() {
        let auth = JwtAuth::hs256(b"another secret, also 32 bytes long").unwrap();
        assert_eq!(
            ws_identity_jwt(&auth, &hs(&claims("ana"))),
            Err(JwtError::Signature)
        );
    }

    #[test]
    fn expiry_and_not_before_with_and_without_leeway_exp_is_required() {
        let auth = JwtAuth::hs256(SECRET).unwrap();
        let expired = hs(&json!({"sub": "ana", "exp": now() - 120}));
        assert_eq!(ws_identity_jwt(&auth, &expired), Err(JwtError::Expired));
        // Within the default 30 s of leeway.
        let just = hs(&json!({"sub": "ana", "exp": now() - 5}));
        assert!(ws_identity_jwt(&auth, &just).is_ok());
        let strict = auth.clone().leeway(Duration::ZERO);
        assert_eq!(ws_identity_jwt(&strict, &just), Err(JwtError::Expired));

        let early = hs(&json!({"sub": "ana", "exp": now() + 600, "nbf": now() + 300}));
        assert_eq!(ws_identity_jwt(&auth, &early), Err(JwtError::NotYetValid));
        let soon = hs(&json!({"sub": "ana", "exp": now() + 600, "nbf": now() + 5}));
        assert!(ws_identity_jwt(&auth, &soon).is_ok());

        // `exp` is required, and must be a number.
        let forever = hs(&json!({"sub": "ana"}));
        assert_eq!(
            ws_identity_jwt(&auth, &forever),
            Err(JwtError::MissingClaim("exp".into()))
        );
        let text = hs(&json!({"sub": "ana", "exp": "tomorrow"}));
        assert!(ws_identity_jwt(&auth, &text).is_err());
    }

    #[test]
    fn audience_and_issuer_required_once_set_another_refused_an_unexpected_aud_refused() {
        let auth = JwtAuth::hs256(SECRET)
            .unwrap()
            .audience("chat")
            .issuer("https://id.example");
        let good =
            json!({"sub": "ana", "exp": now() + 60, "aud": "chat", "iss": "https://id.example"});
        assert!(ws_identity_jwt(&auth, &hs(&good)).is_ok());
        let listed = json!({"sub": "ana", "exp": now() + 60, "aud": ["billing", "chat"], "iss": "https://id.example"});
        assert!(ws_identity_jwt(&auth, &hs(&listed)).is_ok());

        let other =
            json!({"sub": "ana", "exp": now() + 60, "aud": "billing", "iss": "https://id.example"});
        assert_eq!(ws_identity_jwt(&auth, &hs(&other)), Err(JwtError::Audience));
        let none = json!({"sub": "ana", "exp": now() + 60, "iss": "https://id.example"});
        assert_eq!(
            ws_identity_jwt(&auth, &hs(&none)),
            Err(JwtError::MissingClaim("aud".into()))
        );
        let issuer =
            json!({"sub": "ana", "exp": now() + 60, "aud": "chat", "iss": "https://evil.example"});
        assert_eq!(ws_identity_jwt(&auth, &hs(&issuer)), Err(JwtError::Issuer));

        // No audience set: a token for some audience is not for us.
        let plain = JwtAuth::hs256(SECRET).unwrap();
        assert_eq!(ws_identity_jwt(&plain, &hs(&good)), Err(JwtError::Audience));
    }

    #[test]
    fn alg_none_and_algorithm_switches_are_refused() {
        let auth = JwtAuth::hs256(SECRET).unwrap();
        let header = b64(&json!({"alg": "none", "typ": "JWT"}));
        let body = b64(&claims("root"));
        assert_eq!(
            ws_identity_jwt(&auth, &format!("{header}.{body}.")),
            Err(JwtError::Algorithm)
        );
        let header = b64(&json!({"alg": "None"}));
        assert_eq!(
            ws_identity_jwt(&auth, &format!("{header}.{body}.")),
            Err(JwtError::Algorithm)
        );

        // HS256 "signed" with the RSA public key as the secret.
        let rsa = JwtAuth::rs256_pem(RSA_PUBLIC).unwrap();
        let key = EncodingKey::from_secret(RSA_PUBLIC).unwrap();
        let switched = encode(&Header::new(Algorithm::HS256), &claims("root"), &key).unwrap();
        assert_eq!(ws_identity_jwt(&rsa, &switched), Err(JwtError::Algorithm));
        // HS512 with the right secret is still not HS256.
        let key = EncodingKey::from_secret(SECRET).unwrap();
        let hs512 = encode(&Header::new(Algorithm::HS512), &claims("ana"), &key).unwrap();
        assert_eq!(ws_identity_jwt(&auth, &hs512), Err(JwtError::Algorithm));
    }

    #[test]
    fn malformed_tokens() {
        let auth = JwtAuth::hs256(SECRET).unwrap();
        for token in ["", "abc", "a.b", "a.b.c.d", "!!.??.**"] {
            assert_eq!(
                ws_identity_jwt(&auth, token),
                Err(JwtError::Malformed),
                "{token}"
            );
        }
        let header = b64(&json!({"alg": "HS256"}));
        assert_eq!(
            ws_identity_jwt(&auth, &format!("{header}.e30.sig!")),
            Err(JwtError::Malformed)
        );
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(ws_identity_jwt(&auth, &long), Err(JwtError::Malformed));
    }

    #[test]
    fn the_rooms_claim_becomes_allowed_rooms_a_non_array_is_refused() {
        let auth = JwtAuth::hs256(SECRET).unwrap();
        let token = hs(&json!({"sub": "ana", "exp": now() + 60, "rooms": ["public-*", "team-7"]}));
        let id = ws_identity_jwt(&auth, &token).unwrap();
        assert_eq!(
            id.allowed_rooms,
            Some(vec!["public-*".to_string(), "team-7".to_string()])
        );
        assert!(id.allows_room("public-lobby"));
        assert!(id.allows_room("team-7"));
        assert!(!id.allows_room("team-70"));
        assert!(!id.allows_room("private-bo"));

        let none = hs(&json!({"sub": "ana", "exp": now() + 60, "rooms": []}));
        let id = ws_identity_jwt(&auth, &none).unwrap();
        assert!(!id.allows_room("public-lobby"));

        let bad = hs(&json!({"sub": "ana", "exp": now() + 60, "rooms": "public-*"}));
        assert_eq!(
            ws_identity_jwt(&auth, &bad),
            Err(JwtError::InvalidClaim("rooms".into()))
        );
        let mixed = hs(&json!({"sub": "ana", "exp": now() + 60, "rooms": ["a", 1]}));
        assert_eq!(
            ws_identity_jwt(&auth, &mixed),
            Err(JwtError::InvalidClaim("rooms".into()))
        );

        let renamed = auth.rooms_claim("chan");
        let token = hs(&json!({"sub": "ana", "exp": now() + 60, "chan": ["x"]}));
        assert_eq!(
            ws_identity_jwt(&renamed, &token).unwrap().allowed_rooms,
            Some(vec!["x".to_string()])
        );
    }

    fn request(auth: Option<&str>, uri: &str) -> Request {
        let mut b = http::Request::builder().uri(uri);
        if let Some(a) = auth {
            b = b.header(http::header::AUTHORIZATION, a);
        }
        b.body(http_types::empty()).unwrap()
    }

    #[test]
    fn token_sources_the_bearer_header_then_the_query_two_tokens_are_refused() {
        let token = hs(&claims("ana"));
        let other = hs(&claims("bo"));
        let auth = JwtAuth::hs256(SECRET).unwrap();
        let user = |req: &Request| auth.identify(req).map(|id| id.user.unwrap_or_default());

        assert_eq!(
            user(&request(Some(&format!("Bearer {token}")), "/")),
            Ok("ana".into())
        );
        assert_eq!(
            user(&request(Some(&format!("bEaReR  {token} ")), "/")),
            Ok("ana".into())
        );
        assert_eq!(
            user(&request(None, &format!("/ws?token={token}"))),
            Ok("ana".into())
        );
        // The header wins over the query.
        assert_eq!(
            user(&request(
                Some(&format!("Bearer {token}")),
                &format!("/?token={other}")
            )),
            Ok("ana".into())
        );
        // Another scheme is not a bearer token.
        assert_eq!(
            user(&request(Some("Basic YW5hOng="), "/")),
            Err(JwtError::Missing)
        );
        assert_eq!(user(&request(None, "/")), Err(JwtError::Missing));
        assert_eq!(
            user(&request(Some("Bearer "), "/")),
            Err(JwtError::Malformed)
        );
        assert_eq!(
            user(&request(None, &format!("/?token={token}&token={other}"))),
            Err(JwtError::Malformed)
        );

        let open = auth.clone().allow_anonymous(true);
        assert_eq!(open.identify(&request(None, "/")), Ok(Identity::default()));
        // A bad token is refused even so.
        assert_eq!(
            open.identify(&request(Some("Bearer x.y.z"), "/")),
            Err(JwtError::Malformed)
        );
    }

    #[test]
    fn refusals_answer_401_with_a_bearer_invalid_token_challenge() {
        let res = unauthorized(&JwtError::Expired);
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            res.headers()[WWW_AUTHENTICATE],
            r#"Bearer error="invalid_token", error_description="token expired""#
        );
        let res = unauthorized(&JwtError::Missing);
        assert_eq!(res.headers()[WWW_AUTHENTICATE], "Bearer");
        let res = unauthorized(&JwtError::MissingClaim("a\"b\\c\u{e9}".into()));
        assert_eq!(
            res.headers()[WWW_AUTHENTICATE],
            r#"Bearer error="invalid_token", error_description="missing claim a?b?c?""#
        );
    }

    #[test]
    fn the_first_message_authenticates_anything_else_or_another_user_closes() {
        let auth = JwtAuth::hs256(SECRET).unwrap();
        let token = hs(&claims("ana"));
        let msg = |v: Value| Message::text(v.to_string());
        let anon = Identity::default();

        let ok = auth.authenticate(&anon, &msg(json!({"type": "authenticate", "token": token})));
        assert_eq!(ok, Ok(Identity::user("ana")));
        // The identify hook's user may confirm, not change.
        assert!(
            auth.authenticate(
                &Identity::user("ana"),
                &msg(json!({"type": "authenticate", "token": token}))
            )
            .is_ok()
        );
        assert_eq!(
            auth.authenticate(
                &Identity::user("bo"),
                &msg(json!({"type": "authenticate", "token": token}))
            ),
            Err("token is for another user".to_string())
        );

        let expected = r#"first message must be {"type":"authenticate","token":"<jwt>"}"#;
        for bad in [
            msg(json!({"type": "subscribe", "room": "x"})),
            msg(json!({"type": "authenticate"})),
            msg(json!({"type": "authenticate", "token": 7})),
            Message::text("hello"),
            Message::binary(token.clone().into_bytes()),
        ] {
            assert_eq!(auth.authenticate(&anon, &bad), Err(expected.to_string()));
        }
        let expired = hs(&json!({"sub": "ana", "exp": now() - 600}));
        assert_eq!(
            auth.authenticate(
                &anon,
                &msg(json!({"type": "authenticate", "token": expired}))
            ),
            Err("token expired".to_string())
        );
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../ws_identity_jwt.md")]
#[doc = include_str!("../../../types/infra/JwtAuth.md")]
#[doc = include_str!("../../../types/infra/JwtError.md")]
pub struct RegistryExamples;
