//! Users, login sessions and API keys (sled trees). Secrets are stored only as BLAKE3 hashes;
//! passwords as Argon2id PHC strings.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("store: {0}")]
    Store(#[from] sled::Error),
    #[error("an admin already exists")]
    AlreadyInitialized,
    #[error("invalid email or password")]
    BadCredentials,
    #[error("{0}")]
    Invalid(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("randomness unavailable: {0}")]
    Random(String),
    #[error("corrupt auth record: {0}")]
    Corrupt(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    pub is_admin: bool,
    pub password: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub permissions: Vec<String>,
    pub created_at: String,
}

#[derive(Clone)]
pub struct Auth {
    db: sled::Db,
    users: sled::Tree,
    emails: sled::Tree,
    sessions: sled::Tree,
    keys: sled::Tree,
}

fn secret_hash(secret: &str) -> [u8; 32] {
    *blake3::hash(secret.as_bytes()).as_bytes()
}

fn decode<T: for<'de> Deserialize<'de>>(v: &[u8]) -> Result<T, AuthError> {
    serde_json::from_slice(v).map_err(|e| AuthError::Corrupt(e.to_string()))
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, AuthError> {
    serde_json::to_vec(v).map_err(|e| AuthError::Corrupt(e.to_string()))
}

fn random(n: usize) -> Result<String, AuthError> {
    crate::random_hex(n).map_err(|e| AuthError::Random(e.to_string()))
}

impl Auth {
    pub fn open(db: &sled::Db) -> Result<Self, AuthError> {
        Ok(Self {
            db: db.clone(),
            users: db.open_tree("users")?,
            emails: db.open_tree("user_emails")?,
            sessions: db.open_tree("sessions")?,
            keys: db.open_tree("api_keys")?,
        })
    }

    pub fn is_initialized(&self) -> bool {
        self.db.contains_key(b"admin_user").unwrap_or(true)
    }

    /// Creates the first user, an admin. Refused once any user exists.
    pub fn admin_sign_up(
        &self,
        email: &str,
        password: &str,
        name: &str,
    ) -> Result<User, AuthError> {
        let email = email.trim().to_lowercase();
        if !email.contains('@') || email.len() > 254 {
            return Err(AuthError::Invalid(
                "email must be a valid email address".into(),
            ));
        }
        if password.chars().count() < 8 {
            return Err(AuthError::Invalid(
                "password must be at least 8 characters".into(),
            ));
        }
        if name.trim().is_empty() {
            return Err(AuthError::Invalid("name must not be empty".into()));
        }
        let hash = Argon2::default()
            .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
            .map_err(|e| AuthError::Hash(e.to_string()))?
            .to_string();
        let user = User {
            id: random(16)?,
            email: email.clone(),
            name: name.trim().to_owned(),
            is_admin: true,
            password: hash,
            created_at: crate::now_rfc3339(),
        };
        // Atomically: only if no user exists yet.
        let created = self
            .db
            .compare_and_swap(
                b"admin_user",
                None as Option<&[u8]>,
                Some(user.id.as_bytes()),
            )?
            .is_ok();
        if !created {
            return Err(AuthError::AlreadyInitialized);
        }
        self.users.insert(user.id.as_bytes(), encode(&user)?)?;
        self.emails.insert(email.as_bytes(), user.id.as_bytes())?;
        self.db.flush()?;
        Ok(user)
    }

    /// The first admin (created by admin sign-up), if any.
    pub fn admin(&self) -> Result<Option<User>, AuthError> {
        match self.db.get(b"admin_user")? {
            Some(id) => self.user(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    pub fn user(&self, id: &str) -> Result<Option<User>, AuthError> {
        match self.users.get(id.as_bytes())? {
            Some(v) => decode(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Checks credentials and opens a session; returns the user and the access token.
    pub fn login(&self, email: &str, password: &str) -> Result<(User, String), AuthError> {
        let email = email.trim().to_lowercase();
        let id = self
            .emails
            .get(email.as_bytes())?
            .ok_or(AuthError::BadCredentials)?;
        let user = self
            .user(&String::from_utf8_lossy(&id))?
            .ok_or(AuthError::BadCredentials)?;
        let parsed =
            PasswordHash::new(&user.password).map_err(|e| AuthError::Corrupt(e.to_string()))?;
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .map_err(|_| AuthError::BadCredentials)?;
        let token = random(32)?;
        self.sessions
            .insert(secret_hash(&token), user.id.as_bytes())?;
        self.db.flush()?;
        Ok((user, token))
    }

    pub fn logout(&self, token: &str) -> Result<(), AuthError> {
        self.sessions.remove(secret_hash(token))?;
        Ok(())
    }

    pub fn user_by_token(&self, token: &str) -> Result<Option<User>, AuthError> {
        match self.sessions.get(secret_hash(token))? {
            Some(id) => self.user(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    pub fn create_api_key(
        &self,
        user: &User,
        name: &str,
        permissions: Vec<String>,
    ) -> Result<(ApiKey, String), AuthError> {
        let secret = random(32)?;
        let key = ApiKey {
            id: random(16)?,
            user_id: user.id.clone(),
            name: if name.trim().is_empty() {
                "API Key".into()
            } else {
                name.trim().to_owned()
            },
            permissions: if permissions.is_empty() {
                vec!["all".into()]
            } else {
                permissions
            },
            created_at: crate::now_rfc3339(),
        };
        self.keys.insert(secret_hash(&secret), encode(&key)?)?;
        self.db.flush()?;
        Ok((key, secret))
    }

    pub fn api_key(&self, secret: &str) -> Result<Option<ApiKey>, AuthError> {
        match self.keys.get(secret_hash(secret))? {
            Some(v) => decode(&v).map(Some),
            None => Ok(None),
        }
    }

    pub fn user_by_api_key(&self, secret: &str) -> Result<Option<User>, AuthError> {
        match self.keys.get(secret_hash(secret))? {
            Some(v) => {
                let key: ApiKey = decode(&v)?;
                self.user(&key.user_id)
            }
            None => Ok(None),
        }
    }
}
