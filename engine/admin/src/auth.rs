//! Who may use the admin API: bearer tokens with a role, `viewer` or `operator`.
//!
//! Two kinds of token, from one TOML file (`--auth-file`):
//! - static tokens for local mode, configured as SHA-256 digests so that the file holds no
//!   secret (`sagaflow admin-server --hash-token` prints the digest of a token);
//! - JWTs, verified against the issuer's public key (RS256, ES256 or EdDSA), with the issuer,
//!   the audience and the expiry checked, and the role read from a claim.
//!
//! ```toml
//! [[tokens]]
//! name = "alice"            # the actor the audit trail records
//! role = "operator"
//! sha256 = "5e88…"          # sagaflow admin-server --hash-token < token-file
//!
//! [jwt]
//! issuer = "https://login.example.com/"
//! audience = "sagaflow"     # optional
//! algorithm = "RS256"       # RS256, ES256 or EdDSA
//! public_key_file = "issuer.pem"   # relative to this file
//! role_claim = "sagaflow_role"     # a string, or an array of strings; default "role"
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// What a caller may do. An operator may do everything a viewer may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads: sagas, incidents, jobs.
    Viewer,
    /// Reads, and every action: saga commands and bulk jobs.
    Operator,
}

impl Role {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// Who: a static token's name, or the JWT's subject.
    pub actor: String,
    /// What it may do.
    pub role: Role,
}

/// Why a request is refused: 401 (who are you?) or 403 (not allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// 401 or 403.
    pub status: u16,
    /// Who asked, as far as is known: `anonymous`, `unverified`, or the principal.
    pub actor: String,
    /// The role, when authenticated.
    pub role: Option<Role>,
    /// What is wrong and how to fix it.
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
    jwt: Option<JwtEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    role: Role,
    sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JwtEntry {
    issuer: String,
    audience: Option<String>,
    algorithm: String,
    public_key_file: PathBuf,
    #[serde(default = "default_role_claim")]
    role_claim: String,
}

fn default_role_claim() -> String {
    "role".into()
}

struct Jwt {
    key: DecodingKey,
    validation: Validation,
    role_claim: String,
}

/// The configured tokens.
pub struct Auth {
    /// Digest (hex) → (name, role).
    tokens: HashMap<String, (String, Role)>,
    jwt: Option<Jwt>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.tokens.len())
            .field("jwt", &self.jwt.is_some())
            .finish()
    }
}

/// The SHA-256 digest of a token, as the auth file holds it (64 hex digits).
pub fn token_digest(token: &str) -> String {
    Sha256::digest(token.trim().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Auth {
    /// Reads the auth file; every problem names the file and the entry.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "cannot read the auth file {} (--auth-file, SAGAFLOW_ADMIN_AUTH_FILE): {e}",
                path.display()
            ))
        })?;
        Self::parse(&text, path)
    }

    /// Parses an auth file's text; `path` names it in errors and anchors the key file.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let where_ = path.display();
        let file: File =
            toml::from_str(text).map_err(|e| Error::Config(format!("auth file {where_}: {e}")))?;
        let mut tokens = HashMap::new();
        for (i, t) in file.tokens.into_iter().enumerate() {
            let digest = t.sha256.trim().to_ascii_lowercase();
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::Config(format!(
                    "auth file {where_}: tokens[{i}] ({}): sha256 must be 64 hex digits, the SHA-256 of the token; `sagaflow admin-server --hash-token` prints it",
                    t.name
                )));
            }
            if t.name.trim().is_empty() {
                return Err(Error::Config(format!(
                    "auth file {where_}: tokens[{i}]: name must not be empty; it is the actor the audit trail records"
                )));
            }
            if tokens.insert(digest, (t.name.clone(), t.role)).is_some() {
                return Err(Error::Config(format!(
                    "auth file {where_}: tokens[{i}] ({}): the same token is configured twice",
                    t.name
                )));
            }
        }
        let jwt = file.jwt.map(|j| Jwt::load(j, path)).transpose()?;
        if tokens.is_empty() && jwt.is_none() {
            return Err(Error::Config(format!(
                "auth file {where_} configures no [[tokens]] and no [jwt]: nobody could use the API"
            )));
        }
        Ok(Self { tokens, jwt })
    }

    /// Who the `Authorization` header's bearer token says the caller is (401 otherwise).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, Denied> {
        let unauthenticated = |actor: &str, message: String| Denied {
            status: 401,
            actor: actor.to_string(),
            role: None,
            message,
        };
        let Some(header) = authorization else {
            return Err(unauthenticated(
                "anonymous",
                "no credentials: send `Authorization: Bearer <token>` with a token from the admin API's auth file, or a JWT from the configured issuer".into(),
            ));
        };
        let Some(token) = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            return Err(unauthenticated(
                "anonymous",
                "the Authorization header must be `Bearer <token>`".into(),
            ));
        };
        if let Some((name, role)) = self.tokens.get(&token_digest(token)) {
            return Ok(Principal {
                actor: name.clone(),
                role: *role,
            });
        }
        let looks_like_jwt = token.split('.').count() == 3;
        match (&self.jwt, looks_like_jwt) {
            (Some(jwt), true) => jwt.verify(token).map_err(|m| unauthenticated("unverified", m)),
            (None, true) => Err(unauthenticated(
                "unverified",
                "the token is a JWT, but this admin API verifies no JWTs (no [jwt] in its auth file)".into(),
            )),
            _ => Err(unauthenticated(
                "unverified",
                "unknown token: it matches none of the auth file's tokens".into(),
            )),
        }
    }
}

/// 403 unless `principal` has at least `role`.
pub fn require(principal: &Principal, role: Role, what: &str) -> Result<(), Denied> {
    if principal.role >= role {
        return Ok(());
    }
    Err(Denied {
        status: 403,
        actor: principal.actor.clone(),
        role: Some(principal.role),
        message: format!(
            "{} has the {} role; {what} needs the {} role",
            principal.actor,
            principal.role.as_str(),
            role.as_str()
        ),
    })
}

impl Jwt {
    fn load(j: JwtEntry, auth_file: &Path) -> Result<Self> {
        // The RustCrypto backend: verification only (the rsa crate's timing advisory concerns
        // decryption and signing with a private key, which this never does). Installing it
        // twice is harmless: the first one stays.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        let where_ = auth_file.display();
        let key_path = auth_file
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(&j.public_key_file);
        let pem = std::fs::read(&key_path).map_err(|e| {
            Error::Config(format!(
                "auth file {where_}: [jwt] public_key_file {}: {e}",
                key_path.display()
            ))
        })?;
        let (algorithm, key) = match j.algorithm.as_str() {
            "RS256" => (Algorithm::RS256, DecodingKey::from_rsa_pem(&pem)),
            "ES256" => (Algorithm::ES256, DecodingKey::from_ec_pem(&pem)),
            "EdDSA" => (Algorithm::EdDSA, DecodingKey::from_ed_pem(&pem)),
            other => {
                return Err(Error::Config(format!(
                    "auth file {where_}: [jwt] algorithm {other:?} is not supported; use RS256, ES256 or EdDSA"
                )))
            }
        };
        let key = key.map_err(|e| {
            Error::Config(format!(
                "auth file {where_}: [jwt] {} is not a {} public key in PEM: {e}",
                key_path.display(),
                j.algorithm
            ))
        })?;
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[j.issuer.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        // A token is refused before its `nbf` as after its `exp`.
        validation.validate_nbf = true;
        match &j.audience {
            Some(audience) => validation.set_audience(&[audience.as_str()]),
            None => validation.validate_aud = false,
        }
        Ok(Self {
            key,
            validation,
            role_claim: j.role_claim,
        })
    }

    fn verify(&self, token: &str) -> Result<Principal, String> {
        let data = jsonwebtoken::decode::<Value>(token, &self.key, &self.validation)
            .map_err(|e| format!("the JWT does not verify: {e}"))?;
        let claims = data.claims;
        let actor = claims["sub"].as_str().unwrap_or_default().to_string();
        if actor.trim().is_empty() {
            return Err("the JWT verifies, but its `sub` claim is empty: the issuer must name the caller, whom the audit trail records".into());
        }
        let roles: Vec<Role> = match &claims[&self.role_claim] {
            Value::String(s) => Role::parse(s).into_iter().collect(),
            Value::Array(items) => items
                .iter()
                .filter_map(|v| v.as_str().and_then(Role::parse))
                .collect(),
            _ => Vec::new(),
        };
        let role = roles.into_iter().max().ok_or_else(|| {
            format!(
                "the JWT of {actor} verifies, but its `{}` claim names no role (viewer or operator)",
                self.role_claim
            )
        })?;
        Ok(Principal { actor, role })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        let text = format!(
            "[[tokens]]\nname = \"ann\"\nrole = \"viewer\"\nsha256 = \"{}\"\n[[tokens]]\nname = \"olga\"\nrole = \"operator\"\nsha256 = \"{}\"\n",
            token_digest("view-secret"),
            token_digest("op-secret")
        );
        Auth::parse(&text, Path::new("auth.toml")).expect("parses")
    }

    #[test]
    fn static_tokens_are_matched_by_digest_and_carry_their_role() {
        let auth = auth();
        let ann = auth.authenticate(Some("Bearer view-secret")).expect("ann");
        assert_eq!((ann.actor.as_str(), ann.role), ("ann", Role::Viewer));
        let olga = auth.authenticate(Some("Bearer op-secret")).expect("olga");
        assert_eq!(olga.role, Role::Operator);
        assert!(require(&olga, Role::Operator, "retry").is_ok());
        let denied = require(&ann, Role::Operator, "retry").unwrap_err();
        assert_eq!(denied.status, 403);
        assert!(
            denied.message.contains("retry needs the operator role"),
            "{}",
            denied.message
        );
    }

    #[test]
    fn missing_malformed_and_unknown_credentials_are_401_with_a_reason() {
        let auth = auth();
        for (header, says) in [
            (None, "no credentials"),
            (Some("Basic abc"), "must be `Bearer <token>`"),
            (Some("Bearer nope"), "unknown token"),
            (Some("Bearer a.b.c"), "verifies no JWTs"),
        ] {
            let denied = auth.authenticate(header).unwrap_err();
            assert_eq!(denied.status, 401);
            assert!(
                denied.message.contains(says),
                "{header:?}: {}",
                denied.message
            );
        }
    }

    #[test]
    fn a_bad_auth_file_names_the_entry_and_the_fix() {
        let bad = Auth::parse(
            "[[tokens]]\nname = \"x\"\nrole = \"operator\"\nsha256 = \"op-secret\"\n",
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            bad.contains("tokens[0] (x)") && bad.contains("--hash-token"),
            "{bad}"
        );
        let empty = Auth::parse("", Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(empty.contains("nobody could use the API"), "{empty}");
        let role = Auth::parse(
            "[[tokens]]\nname = \"x\"\nrole = \"admin\"\nsha256 = \"00\"\n",
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(role.contains("admin"), "{role}");
    }

    /// A JWT signed by the configured issuer's key verifies, with its role claim; one signed by
    /// another key, expired, or of another issuer does not.
    #[test]
    fn jwts_verify_against_the_issuer_key() {
        let dir = std::env::temp_dir().join(format!("sagaflow-jwt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let openssl = |args: &[&str]| {
            let ok = std::process::Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .status()
                .expect("run openssl")
                .success();
            assert!(ok, "openssl {args:?}");
        };
        for name in ["issuer", "other"] {
            openssl(&[
                "genpkey",
                "-algorithm",
                "ed25519",
                "-out",
                &format!("{name}.key"),
            ]);
        }
        openssl(&["pkey", "-in", "issuer.key", "-pubout", "-out", "issuer.pem"]);
        let auth_path = dir.join("auth.toml");
        let auth = Auth::parse(
            "[jwt]\nissuer = \"https://login.test/\"\naudience = \"sagaflow\"\nalgorithm = \"EdDSA\"\npublic_key_file = \"issuer.pem\"\nrole_claim = \"roles\"\n",
            &auth_path,
        )
        .expect("parses");
        let sign = |key: &str, claims: Value| {
            let pem = std::fs::read(dir.join(key)).expect("key");
            let key = jsonwebtoken::EncodingKey::from_ed_pem(&pem).expect("ed key");
            let header = jsonwebtoken::Header::new(Algorithm::EdDSA);
            format!(
                "Bearer {}",
                jsonwebtoken::encode(&header, &claims, &key).expect("sign")
            )
        };
        let exp = sagaflow_avro::now_ms() / 1000 + 600;
        let claims = |iss: &str, exp: i64| serde_json::json!({"sub": "jo", "iss": iss, "aud": "sagaflow", "exp": exp, "roles": ["viewer", "operator"]});
        // Not valid for another five minutes (beyond the leeway); and one that names nobody.
        let mut not_yet = claims("https://login.test/", exp);
        not_yet["nbf"] = serde_json::json!(exp - 300);
        let mut nobody = claims("https://login.test/", exp);
        nobody["sub"] = serde_json::json!("");
        let jo = auth
            .authenticate(Some(&sign(
                "issuer.key",
                claims("https://login.test/", exp),
            )))
            .expect("verifies");
        assert_eq!((jo.actor.as_str(), jo.role), ("jo", Role::Operator));
        for (token, why) in [
            (
                sign("other.key", claims("https://login.test/", exp)),
                "InvalidSignature",
            ),
            (
                sign("issuer.key", claims("https://evil.test/", exp)),
                "InvalidIssuer",
            ),
            (
                sign("issuer.key", claims("https://login.test/", exp - 7200)),
                "ExpiredSignature",
            ),
            (sign("issuer.key", not_yet), "ImmatureSignature"),
            (sign("issuer.key", nobody), "is empty"),
        ] {
            let denied = auth.authenticate(Some(&token)).unwrap_err();
            assert_eq!(denied.status, 401);
            assert!(denied.message.contains(why), "{why}: {}", denied.message);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
