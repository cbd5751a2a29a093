//! Access control (SPEC §3): the admin API key, client tokens (HS256 JWTs
//! with `doc`, `perm`, `exp`, `sub`, `name`), document patterns, and the
//! permission a WebSocket connection gets.
//!
//! Dev mode (no API key): the API is open and a WebSocket without a token
//! may write; a token, when given, is still verified and its permission
//! applies (so read-only links can be tried locally).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{AuthSettings, Secret};
use crate::doc_name::DocName;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Perm {
    Read,
    Write,
}

/// The claims of a client token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// An exact document name, or a prefix ending in `*`.
    pub doc: String,
    pub perm: Perm,
    /// Expiry, unix seconds.
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The claims a token minted here carries: `iss` and `aud` when they are
/// configured (the validation checks them in the token as it reads it).
#[derive(Serialize)]
struct Minted<'a> {
    #[serde(flatten)]
    claims: &'a Claims,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// What a connection may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub perm: Perm,
    pub user: Option<String>,
    pub name: Option<String>,
    /// When the token expires (unix seconds); the connection closes then.
    pub expires_at: Option<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing credentials: send `Authorization: Bearer <token>` or `?token=`")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("the token has expired")]
    Expired,
    #[error("the token does not grant access to this document")]
    WrongDocument,
    #[error("invalid API key")]
    BadApiKey,
    #[error("invalid document pattern: a document name, or a prefix of one followed by `*`")]
    BadPattern,
    #[error("this server verifies tokens with TANDEM_TOKEN_PUBLIC_KEY and has no TANDEM_TOKEN_SECRET to sign them with")]
    NoSigningSecret,
}

pub struct Auth {
    api_key: Option<Secret>,
    /// Browser origins allowed besides the server's own (SPEC §3).
    pub origins: AllowedOrigins,
    /// The HS256 secret, as keys; `None` when tokens are verified by a
    /// public key only (then this server mints none).
    hmac: Option<(EncodingKey, DecodingKey)>,
    /// A public key and the one algorithm it verifies.
    public: Option<(Algorithm, DecodingKey)>,
    issuer: Option<String>,
    audience: Option<String>,
}

/// `TANDEM_TOKEN_PUBLIC_KEY` cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("TANDEM_TOKEN_PUBLIC_KEY: {0}")]
pub struct KeyError(pub String);

/// Longest lifetime `POST /api/tokens` grants.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

impl Auth {
    /// The keys that `settings` name. HS256 is on with `TANDEM_TOKEN_SECRET`,
    /// or without a public key (then derived from the API key, or random in
    /// dev mode); a public key adds its own algorithm.
    pub fn new(settings: &AuthSettings) -> Result<Self, KeyError> {
        let secret = match (
            &settings.token_secret,
            &settings.token_public_key,
            &settings.api_key,
        ) {
            (Some(secret), _, _) => Some(secret.0.clone().into_bytes()),
            (None, Some(_), _) => None,
            (None, None, Some(key)) => Some(token_secret_from_api_key(&key.0).to_vec()),
            (None, None, None) => Some(rand::random::<[u8; 32]>().to_vec()),
        };
        let public = match &settings.token_public_key {
            Some(setting) => Some(public_key(setting)?),
            None => None,
        };
        Ok(Auth {
            api_key: settings.api_key.clone(),
            // `Settings::validate` has parsed it already.
            origins: AllowedOrigins::parse(settings.allowed_origins.as_deref()).unwrap_or_default(),
            hmac: secret.map(|s| (EncodingKey::from_secret(&s), DecodingKey::from_secret(&s))),
            public,
            issuer: settings.token_issuer.clone(),
            audience: settings.token_audience.clone(),
        })
    }

    /// The checks for a token signed with `alg`: that algorithm only, so a
    /// token can never pick the key family it is verified with.
    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = 0;
        validation.validate_exp = true;
        let mut required = vec!["exp"];
        match &self.issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation
    }

    /// The algorithms tokens may be signed with.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let hmac = self.hmac.as_ref().map(|_| Algorithm::HS256);
        hmac.into_iter()
            .chain(self.public.as_ref().map(|(alg, _)| *alg))
            .collect()
    }

    pub fn dev_mode(&self) -> bool {
        self.api_key.is_none()
    }

    /// Checks an `Authorization` header against the API key (always passes
    /// in dev mode). The comparison takes the same time wherever it differs.
    pub fn check_api_key(&self, authorization: Option<&str>) -> Result<(), AuthError> {
        let Some(key) = &self.api_key else {
            return Ok(());
        };
        let given = bearer(authorization).ok_or(AuthError::Missing)?;
        if constant_time_eq(given.as_bytes(), key.0.as_bytes()) {
            Ok(())
        } else {
            Err(AuthError::BadApiKey)
        }
    }

    /// Signs a token for `doc` (a name or a `prefix*` pattern).
    pub fn mint(
        &self,
        doc: &str,
        perm: Perm,
        ttl: Duration,
        sub: Option<String>,
        name: Option<String>,
    ) -> Result<(String, u64), AuthError> {
        check_pattern(doc)?;
        let (encoding, _) = self.hmac.as_ref().ok_or(AuthError::NoSigningSecret)?;
        let exp = now_secs().saturating_add(ttl.as_secs());
        let claims = Claims {
            doc: doc.to_string(),
            perm,
            exp,
            sub,
            name,
        };
        let minted = Minted {
            claims: &claims,
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
        };
        let token = encode(&Header::new(Algorithm::HS256), &minted, encoding)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        Ok((token, exp))
    }

    /// The access a WebSocket client with `token` gets to `doc`.
    pub fn authorize(&self, token: Option<&str>, doc: &DocName) -> Result<Access, AuthError> {
        let Some(token) = token else {
            return if self.dev_mode() {
                Ok(Access {
                    perm: Perm::Write,
                    user: None,
                    name: None,
                    expires_at: None,
                })
            } else {
                Err(AuthError::Missing)
            };
        };
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let key = match (&self.hmac, &self.public) {
            (Some((_, key)), _) if header.alg == Algorithm::HS256 => key,
            (_, Some((alg, key))) if header.alg == *alg => key,
            _ => {
                return Err(AuthError::Invalid(format!(
                    "tokens signed with {:?} are not accepted here",
                    header.alg
                )))
            }
        };
        let claims = decode::<Claims>(token, key, &self.validation(header.alg))
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            })?
            .claims;
        if !pattern_matches(&claims.doc, doc.as_str()) {
            return Err(AuthError::WrongDocument);
        }
        Ok(Access {
            perm: claims.perm,
            user: claims.sub,
            name: claims.name,
            expires_at: Some(claims.exp),
        })
    }
}

/// The token secret when only the API key is set: an HKDF-SHA256 of the
/// key, so that a client token (which anyone holding it can test guesses
/// against offline) says nothing about the key that opens the admin API.
pub fn token_secret_from_api_key(api_key: &str) -> [u8; 32] {
    let hkdf = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"tandem token secret"), api_key.as_bytes());
    let mut secret = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit of 255 blocks.
    if hkdf.expand(b"hs256", &mut secret).is_err() {
        tracing::error!("deriving the token secret failed");
    }
    secret
}

/// The setting is a PEM text or the path of a PEM file; the algorithm
/// is the key's: ES256 for a P-256 key, RS256 for RSA, EdDSA for Ed25519.
fn public_key(setting: &str) -> Result<(Algorithm, DecodingKey), KeyError> {
    use base64::Engine;
    let pem = if setting.trim_start().starts_with("-----BEGIN") {
        setting.to_string()
    } else {
        std::fs::read_to_string(setting)
            .map_err(|e| KeyError(format!("neither a PEM text nor a readable file: {e}")))?
    };
    if pem.contains("PRIVATE KEY") {
        return Err(KeyError(
            "this is a private key; give the public key only".into(),
        ));
    }
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| KeyError("not a PEM public key".into()))?;
    if pem.contains("-----BEGIN RSA PUBLIC KEY-----") {
        // PKCS#1: the RSAPublicKey itself.
        return Ok((Algorithm::RS256, DecodingKey::from_rsa_der(&der)));
    }
    let alg = key_algorithm(&der)?;
    let key = spki_key(&der).ok_or_else(|| KeyError("not a PEM public key".into()))?;
    let key = match alg {
        Algorithm::ES256 => DecodingKey::from_ec_der(key),
        Algorithm::RS256 => DecodingKey::from_rsa_der(key),
        _ => DecodingKey::from_ed_der(key),
    };
    Ok((alg, key))
}

/// Which algorithm a SubjectPublicKeyInfo is for, from its object
/// identifiers.
fn key_algorithm(der: &[u8]) -> Result<Algorithm, KeyError> {
    let has = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
    // id-ecPublicKey, prime256v1, rsaEncryption, id-Ed25519 (DER-encoded).
    const EC: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const RSA: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ];
    const ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
    if has(EC) {
        return if has(P256) {
            Ok(Algorithm::ES256)
        } else {
            Err(KeyError(
                "an EC key on a curve other than P-256; only ES256 is supported".into(),
            ))
        };
    }
    if has(RSA) {
        return Ok(Algorithm::RS256);
    }
    if has(ED25519) {
        return Ok(Algorithm::EdDSA);
    }
    Err(KeyError(
        "not a P-256, RSA or Ed25519 public key in PEM".into(),
    ))
}

/// The key bits of a DER SubjectPublicKeyInfo: `SEQUENCE { SEQUENCE
/// algorithm, BIT STRING key }`.
fn spki_key(der: &[u8]) -> Option<&[u8]> {
    let (tag, spki, _) = der_element(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, _, rest) = der_element(spki)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, bits, _) = der_element(rest)?;
    // A BIT STRING whose first byte (the unused bits) is 0.
    match (tag, bits.split_first()) {
        (0x03, Some((0, key))) => Some(key),
        _ => None,
    }
}

/// One DER element: its tag, its content and what follows it.
fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, rest) = (rest.get(..n)?, rest.get(n..)?);
        let len = bytes
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, rest)
    };
    Some((tag, rest.get(..len)?, rest.get(len..)?))
}

/// Shorter secrets can be guessed from a token offline.
pub const MIN_SECRET_BYTES: usize = 32;

/// `Bearer <value>` -> `<value>`.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

/// A document pattern: a valid name, or a prefix of one followed by `*`
/// (`*` alone matches every document).
pub fn check_pattern(pattern: &str) -> Result<(), AuthError> {
    match pattern.strip_suffix('*') {
        Some("") => Ok(()),
        Some(prefix) => DocName::parse(prefix)
            .map(|_| ())
            .map_err(|_| AuthError::BadPattern),
        None => DocName::parse(pattern)
            .map(|_| ())
            .map_err(|_| AuthError::BadPattern),
    }
}

pub fn pattern_matches(pattern: &str, doc: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => doc.starts_with(prefix),
        None => pattern == doc,
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The origins allowed besides the server's own.
#[derive(Debug, Clone, Default)]
pub struct AllowedOrigins {
    /// `TANDEM_ALLOWED_ORIGINS` was set.
    pub configured: bool,
    any: bool,
    /// `scheme://host[:port]`, lower case, without a trailing slash.
    listed: Vec<String>,
}

impl AllowedOrigins {
    /// Parses the comma-separated setting; `*` allows any origin.
    pub fn parse(setting: Option<&str>) -> Result<Self, String> {
        let Some(setting) = setting else {
            return Ok(AllowedOrigins::default());
        };
        let mut allowed = AllowedOrigins {
            configured: true,
            ..AllowedOrigins::default()
        };
        for item in setting.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "*" {
                allowed.any = true;
                continue;
            }
            let url = url::Url::parse(item).map_err(|_| {
                format!("{item:?} is not an origin such as https://app.example.com")
            })?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(format!(
                    "{item:?} is not an http(s) origin such as https://app.example.com"
                ));
            }
            allowed
                .listed
                .push(url.origin().ascii_serialization().to_ascii_lowercase());
        }
        Ok(allowed)
    }

    /// Whether a request from `origin` may go on. `host` is the request's
    /// `Host` header: an origin naming the same host and port is the
    /// server's own page.
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        if self.any {
            return true;
        }
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        if self.listed.contains(&origin) {
            return true;
        }
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        match (authority, host) {
            (Some(authority), Some(host)) => authority == host.trim().to_ascii_lowercase(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(key: Option<&str>) -> Auth {
        Auth::new(&settings(key, None)).expect("valid")
    }

    fn settings(key: Option<&str>, secret: Option<&str>) -> AuthSettings {
        AuthSettings {
            api_key: key.map(|k| Secret(k.into())),
            token_secret: secret.map(|k| Secret(k.into())),
            token_public_key: None,
            token_issuer: None,
            token_audience: None,
            allowed_origins: None,
            insecure_no_auth: false,
        }
    }

    #[test]
    fn the_default_token_secret_is_derived_from_the_api_key_not_the_key_itself() {
        let keyed = auth(Some("admin-key"));
        let (token, _) = keyed
            .mint("d", Perm::Write, DEFAULT_TTL, None, None)
            .expect("mints");
        // A token signed with the API key itself is not accepted...
        let with_key = Auth::new(&settings(Some("admin-key"), Some("admin-key"))).expect("valid");
        assert!(with_key.authorize(Some(&token), &name("d")).is_err());
        // ...and the derived secret is stable across restarts.
        assert!(auth(Some("admin-key"))
            .authorize(Some(&token), &name("d"))
            .is_ok());
        assert_ne!(&token_secret_from_api_key("admin-key")[..], b"admin-key");
    }

    fn name(s: &str) -> DocName {
        DocName::parse(s).expect("valid")
    }

    #[test]
    fn patterns_match_exactly_or_by_prefix() {
        assert!(pattern_matches("team:*", "team:x"));
        assert!(!pattern_matches("team:*", "teamx"));
        assert!(pattern_matches("doc", "doc"));
        assert!(!pattern_matches("doc", "doc2"));
        assert!(pattern_matches("*", "anything"));
        assert!(check_pattern("team:*").is_ok());
        assert_eq!(check_pattern("a b*"), Err(AuthError::BadPattern));
        assert_eq!(check_pattern("a*b"), Err(AuthError::BadPattern));
    }

    #[test]
    fn tokens_round_trip_and_are_checked() {
        let a = auth(Some("key"));
        let (t, _) = a
            .mint("team:*", Perm::Read, DEFAULT_TTL, Some("u1".into()), None)
            .expect("mints");
        let access = a.authorize(Some(&t), &name("team:x")).expect("valid");
        assert_eq!(
            (access.perm, access.user.as_deref()),
            (Perm::Read, Some("u1"))
        );
        assert_eq!(
            a.authorize(Some(&t), &name("teamx")),
            Err(AuthError::WrongDocument)
        );
        assert_eq!(a.authorize(None, &name("team:x")), Err(AuthError::Missing));
        let other = auth(Some("another key"));
        assert!(matches!(
            other.authorize(Some(&t), &name("team:x")),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn expired_tokens_are_refused() {
        let a = auth(Some("key"));
        let claims = Claims {
            doc: "d".into(),
            perm: Perm::Write,
            exp: now_secs() - 1,
            sub: None,
            name: None,
        };
        let (encoding, _) = a.hmac.as_ref().expect("hs256");
        let t = encode(&Header::new(Algorithm::HS256), &claims, encoding).expect("encodes");
        assert_eq!(a.authorize(Some(&t), &name("d")), Err(AuthError::Expired));
    }

    const ED25519_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEA0OhrRSQBswTM44N89gKN6WttjfjB1tWpCaVI9hYbZhQ=
-----END PUBLIC KEY-----
";
    const RSA_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDjyYQcXggAC2GtQjBTtW1jvE+K
yC2xjWgYIZrB8ziqAc7gYvx7K5Nlp8Unysj+KJZL/QLU5mKRBRjURl2LomaIOR+G
hWmEzdvMp6eufUEFM8kBe6Lj672SDE5XzPUUf2Pzz0drTRWSFcCCZ0muvtY22HwX
YlH5gBkUvGU00/0P5wIDAQAB
-----END PUBLIC KEY-----
";
    const P384_PEM: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEa7fXqXlYuW4P+g5wi/ybiGi1j/sx67K4
GrI4lA88OZpHG/THwPhYEtj2tyhjVhNbyU07ZivdEv12C8PLu9k1EEufgEWRWSVV
YKGdn4XIs7+PyhZE34Y8LAXvvgLCU8fs
-----END PUBLIC KEY-----
";

    #[test]
    fn the_algorithm_comes_from_the_key() {
        let (alg, _) = public_key(ED25519_PEM).expect("ed25519");
        assert_eq!(alg, Algorithm::EdDSA);
        let (alg, _) = public_key(RSA_PEM).expect("rsa");
        assert_eq!(alg, Algorithm::RS256);
        assert!(public_key(P384_PEM).is_err());
        assert!(
            public_key("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----").is_err()
        );
        assert!(public_key("/no/such/key.pem").is_err());
        assert_eq!(spki_key(&[0x30, 0x05, 0x30]), None);
    }

    #[test]
    fn with_a_public_key_and_no_secret_hs256_is_off() {
        let mut s = settings(Some("key"), None);
        s.token_public_key = Some(ED25519_PEM.into());
        let a = Auth::new(&s).expect("valid");
        assert_eq!(a.algorithms(), vec![Algorithm::EdDSA]);
        assert_eq!(
            a.mint("d", Perm::Write, DEFAULT_TTL, None, None),
            Err(AuthError::NoSigningSecret)
        );
        // A token signed with the secret the API key would give is refused.
        let (t, _) = auth(Some("key"))
            .mint("d", Perm::Write, DEFAULT_TTL, None, None)
            .expect("mints");
        assert!(matches!(
            a.authorize(Some(&t), &name("d")),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn minted_tokens_carry_the_configured_issuer_and_audience() {
        let mut s = settings(Some("key"), None);
        s.token_issuer = Some("iss-a".into());
        s.token_audience = Some("aud-a".into());
        let a = Auth::new(&s).expect("valid");
        let (t, _) = a
            .mint("d", Perm::Read, DEFAULT_TTL, None, None)
            .expect("mints");
        assert!(a.authorize(Some(&t), &name("d")).is_ok());
        // The plain server's token has neither: refused.
        let (plain, _) = auth(Some("key"))
            .mint("d", Perm::Read, DEFAULT_TTL, None, None)
            .expect("mints");
        assert!(a.authorize(Some(&plain), &name("d")).is_err());
        s.token_audience = Some("aud-b".into());
        let b = Auth::new(&s).expect("valid");
        assert!(b.authorize(Some(&t), &name("d")).is_err());
    }

    #[test]
    fn api_key_checks() {
        let a = auth(Some("key"));
        assert!(a.check_api_key(Some("Bearer key")).is_ok());
        assert_eq!(
            a.check_api_key(Some("Bearer nope")),
            Err(AuthError::BadApiKey)
        );
        assert_eq!(a.check_api_key(None), Err(AuthError::Missing));
        assert!(auth(None).check_api_key(None).is_ok());
    }
}

#[cfg(test)]
mod origin_tests {
    use super::*;

    #[test]
    fn the_servers_own_origin_and_listed_ones_pass() {
        let none = AllowedOrigins::parse(None).expect("valid");
        assert!(none.allows("http://127.0.0.1:8080", Some("127.0.0.1:8080")));
        assert!(none.allows("http://LOCALHOST:8080/", Some("localhost:8080")));
        assert!(!none.allows("http://evil.example", Some("127.0.0.1:8080")));
        assert!(!none.allows("http://127.0.0.1:9999", Some("127.0.0.1:8080")));
        assert!(!none.allows("null", Some("127.0.0.1:8080")));
        let listed = AllowedOrigins::parse(Some("https://app.example.com, http://x.test:3000"))
            .expect("valid");
        assert!(listed.allows("https://app.example.com", None));
        assert!(listed.allows("http://x.test:3000", Some("127.0.0.1:8080")));
        assert!(!listed.allows("http://app.example.com", None));
        let any = AllowedOrigins::parse(Some("*")).expect("valid");
        assert!(any.allows("http://evil.example", None));
        assert!(AllowedOrigins::parse(Some("not an origin")).is_err());
        assert!(AllowedOrigins::parse(Some("ftp://x.test")).is_err());
    }
}
