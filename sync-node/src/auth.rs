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
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    pub is_admin: bool,
    pub password: String,
    pub created_at: String,
    /// Set when an admin created the account or reset its password; cleared by a change.
    #[serde(default)]
    pub should_change_password: bool,
    /// Storage quota for the user's originals (`None`: unlimited).
    #[serde(default)]
    pub quota_bytes: Option<u64>,
    /// Immich's storage label (a folder name there; shown to clients here).
    #[serde(default)]
    pub storage_label: Option<String>,
    #[serde(default)]
    pub avatar_color: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    /// When an admin deleted the account: it cannot sign in; its photos went to the trash;
    /// an admin can restore it.
    #[serde(default)]
    pub deleted_at: Option<String>,
}

/// A new household member, as an admin creates them.
#[derive(Debug, Clone, Default)]
pub struct NewMember {
    pub email: String,
    pub password: String,
    pub name: String,
    pub is_admin: bool,
    pub should_change_password: bool,
    pub quota_bytes: Option<u64>,
    pub storage_label: Option<String>,
}

/// An admin's (or a user's own) change to an account; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    pub email: Option<String>,
    pub password: Option<String>,
    pub name: Option<String>,
    pub is_admin: Option<bool>,
    pub should_change_password: Option<bool>,
    pub quota_bytes: Option<Option<u64>>,
    pub storage_label: Option<Option<String>>,
    pub avatar_color: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub permissions: Vec<String>,
    pub created_at: String,
}

/// A login session (the `sessions` tree: BLAKE3 of the token → this, JSON). Older nodes stored
/// the bare user id; such sessions read as created now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub user_id: String,
    #[serde(default)]
    pub created_at: String,
    /// Last use (refreshed at most every [`SESSION_REFRESH_SECS`]); expiry slides from here.
    #[serde(default)]
    pub updated_at: String,
    #[serde(default)]
    pub device_type: String,
    #[serde(default)]
    pub device_os: String,
}

/// A session unused this long ends (sliding: every use moves it).
pub const SESSION_IDLE_SECS: i64 = 30 * 24 * 3600;
const SESSION_REFRESH_SECS: i64 = 3600;

/// Failed logins allowed per account and per client address in [`THROTTLE_WINDOW_SECS`].
pub const MAX_FAILED_LOGINS: u32 = 10;
pub const THROTTLE_WINDOW_SECS: u64 = 15 * 60;

/// Per-account and per-address login failure counts (memory only: a restart forgives).
#[derive(Default)]
pub struct Throttle {
    failures: std::sync::Mutex<std::collections::HashMap<String, (u32, std::time::Instant)>>,
}

impl Throttle {
    /// Seconds to wait, if any of `keys` is over the limit.
    pub fn blocked(&self, keys: &[&str]) -> Option<u64> {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter()
            .filter_map(|k| map.get(*k))
            .filter(|(n, _)| *n >= MAX_FAILED_LOGINS)
            .map(|(_, since)| THROTTLE_WINDOW_SECS.saturating_sub(since.elapsed().as_secs()))
            .filter(|s| *s > 0)
            .max()
    }

    pub fn failed(&self, keys: &[&str]) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, (_, t)| t.elapsed().as_secs() < THROTTLE_WINDOW_SECS);
        }
        for k in keys {
            let e = map
                .entry((*k).to_owned())
                .or_insert((0, std::time::Instant::now()));
            if e.1.elapsed().as_secs() >= THROTTLE_WINDOW_SECS {
                *e = (0, std::time::Instant::now());
            }
            e.0 += 1;
        }
    }

    pub fn succeeded(&self, key: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(key);
    }
}

/// A key (an iroh endpoint id) paired with this household: a user's device, or a sync node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// The iroh endpoint id (hex public key).
    pub id: String,
    /// The user it syncs for; empty for a sync node.
    pub user_id: String,
    pub name: String,
    /// `device` or `node`.
    pub kind: String,
    pub created_at: String,
    /// The login session the device paired with (hash, hex): unpairing ends it too, so an
    /// unpaired browser is signed out rather than pairing itself again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

impl Device {
    pub fn is_node(&self) -> bool {
        self.kind == "node"
    }
}

/// The trees replicated between the household's sync nodes (through the household document).
/// `meta` stands for the default tree's `admin_user` key.
pub const REPLICATED: [&str; 7] = [
    "users",
    "user_emails",
    "sessions",
    "api_keys",
    "devices",
    "shared_links",
    "meta",
];

/// How long a pairing ticket's secret stays valid.
pub const PAIRING_TTL_SECS: i64 = 3600;

#[derive(Clone)]
pub struct Auth {
    pub(crate) db: sled::Db,
    /// Shared links by the BLAKE3 hash of their key (see [`crate::links`]).
    pub(crate) links: sled::Tree,
    users: sled::Tree,
    emails: sled::Tree,
    sessions: sled::Tree,
    keys: sled::Tree,
    devices: sled::Tree,
    pairing: sled::Tree,
    changed: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    pub throttle: std::sync::Arc<Throttle>,
}

/// An Argon2id hash of a random password, verified against when the email is unknown, so an
/// unknown email costs the same time as a wrong password.
fn dummy_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| {
        let pw = crate::random_hex(16).unwrap_or_else(|_| "tessera-dummy".into());
        Argon2::default()
            .hash_password(pw.as_bytes(), &SaltString::generate(&mut OsRng))
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// An iroh endpoint id as the PWA and nodes send it: 64 lowercase hex digits.
pub fn valid_endpoint_id(id: &str) -> bool {
    crate::blobs::valid_hash(id)
}

fn clean_name(name: &str, default: &str) -> String {
    let n: String = name
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect();
    if n.is_empty() {
        default.to_owned()
    } else {
        n
    }
}

pub(crate) fn secret_hash(secret: &str) -> [u8; 32] {
    *blake3::hash(secret.as_bytes()).as_bytes()
}

/// A normalised email address, or why it is not one.
fn valid_email(email: &str) -> Result<String, AuthError> {
    let email = email.trim().to_lowercase();
    if !email.contains('@') || email.len() > 254 {
        return Err(AuthError::Invalid(
            "email must be a valid email address".into(),
        ));
    }
    Ok(email)
}

/// The Argon2id PHC string of a new password (at least 8 characters).
pub(crate) fn hash_new_password(password: &str) -> Result<String, AuthError> {
    if password.chars().count() < 8 {
        return Err(AuthError::Invalid(
            "password must be at least 8 characters".into(),
        ));
    }
    Argon2::default()
        .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

fn decode_session(v: &[u8]) -> Session {
    serde_json::from_slice(v).unwrap_or_else(|_| Session {
        user_id: String::from_utf8_lossy(v).into_owned(),
        created_at: String::new(),
        updated_at: String::new(),
        device_type: String::new(),
        device_os: String::new(),
    })
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
            devices: db.open_tree("devices")?,
            pairing: db.open_tree("pairing_secrets")?,
            links: db.open_tree("shared_links")?,
            changed: std::sync::Arc::new(tokio::sync::watch::channel(0).0),
            throttle: Default::default(),
        })
    }

    /// Bumped after every change to a replicated tree (the household mirror follows it).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub(crate) fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    fn tree(&self, name: &str) -> Option<&sled::Tree> {
        match name {
            "users" => Some(&self.users),
            "user_emails" => Some(&self.emails),
            "sessions" => Some(&self.sessions),
            "api_keys" => Some(&self.keys),
            "devices" => Some(&self.devices),
            "shared_links" => Some(&self.links),
            _ => None,
        }
    }

    /// Every replicated record as `<tree>/<hex key>` → value bytes.
    pub fn export(&self) -> Result<std::collections::BTreeMap<String, Vec<u8>>, AuthError> {
        let mut out = std::collections::BTreeMap::new();
        for name in REPLICATED {
            if name == "meta" {
                if let Some(v) = self.db.get(b"admin_user")? {
                    out.insert(format!("meta/{}", hex(b"admin_user")), v.to_vec());
                }
                continue;
            }
            if let Some(t) = self.tree(name) {
                for kv in t.iter() {
                    let (k, v) = kv?;
                    out.insert(format!("{name}/{}", hex(&k)), v.to_vec());
                }
            }
        }
        Ok(out)
    }

    /// Applies records replicated from another node: `Some(value)` sets, `None` deletes. Keys
    /// that name no replicated tree are ignored (a newer node's tree this one does not know).
    pub fn import(&self, changes: &[(String, Option<Vec<u8>>)]) -> Result<(), AuthError> {
        for (key, value) in changes {
            let Some((name, k)) = key.split_once('/') else {
                continue;
            };
            let Some(k) = unhex(k) else {
                continue;
            };
            let tree: &sled::Tree = match name {
                "meta" if k == b"admin_user" => &self.db,
                other => match self.tree(other) {
                    Some(t) => t,
                    None => continue,
                },
            };
            match value {
                Some(v) => tree.insert(k, v.as_slice())?,
                None => tree.remove(k)?,
            };
        }
        self.db.flush()?;
        Ok(())
    }

    /// Binds a device's key to `user` (at login, or again later: idempotent). A key bound to
    /// another user or to a node is refused.
    pub fn bind_device(
        &self,
        user: &User,
        id: &str,
        name: &str,
        session_token: Option<&str>,
    ) -> Result<Device, AuthError> {
        if !valid_endpoint_id(id) {
            return Err(AuthError::Invalid(
                "endpointId must be a 64-digit hex iroh endpoint id".into(),
            ));
        }
        if let Some(d) = self.device(id)? {
            if d.user_id != user.id {
                return Err(AuthError::Conflict(
                    "this device key is already paired with another account".into(),
                ));
            }
            return Ok(d);
        }
        let d = Device {
            id: id.to_owned(),
            user_id: user.id.clone(),
            name: clean_name(name, "Browser"),
            kind: "device".into(),
            created_at: crate::now_rfc3339(),
            session: session_token.map(|t| hex(&secret_hash(t))),
        };
        self.devices.insert(id.as_bytes(), encode(&d)?)?;
        self.db.flush()?;
        self.bump();
        Ok(d)
    }

    /// Records another sync node of the household.
    pub fn add_node(&self, id: &str, name: &str) -> Result<Device, AuthError> {
        if !valid_endpoint_id(id) {
            return Err(AuthError::Invalid("invalid node id".into()));
        }
        let d = Device {
            id: id.to_owned(),
            user_id: String::new(),
            name: clean_name(name, "sync node"),
            kind: "node".into(),
            created_at: crate::now_rfc3339(),
            session: None,
        };
        self.devices.insert(id.as_bytes(), encode(&d)?)?;
        self.db.flush()?;
        self.bump();
        Ok(d)
    }

    pub fn device(&self, id: &str) -> Result<Option<Device>, AuthError> {
        match self.devices.get(id.as_bytes())? {
            Some(v) => decode(&v).map(Some),
            None => Ok(None),
        }
    }

    /// A user's devices (or, for `None`, the household's nodes).
    pub fn devices(&self, user: Option<&User>) -> Result<Vec<Device>, AuthError> {
        let mut out = Vec::new();
        for kv in self.devices.iter() {
            let (_, v) = kv?;
            let d: Device = decode(&v)?;
            let mine = match user {
                Some(u) => d.user_id == u.id,
                None => d.is_node(),
            };
            if mine {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Unpairs a device of `user` (or, for an admin, a node). Returns whether it existed.
    pub fn revoke_device(&self, user: &User, id: &str) -> Result<bool, AuthError> {
        let Some(d) = self.device(id)? else {
            return Ok(false);
        };
        if d.user_id != user.id && !(d.is_node() && user.is_admin) {
            return Ok(false);
        }
        self.devices.remove(id.as_bytes())?;
        if let Some(s) = d.session.as_deref().and_then(unhex) {
            self.sessions.remove(s)?;
        }
        self.db.flush()?;
        self.bump();
        Ok(true)
    }

    /// A one-time pairing secret for a new node (valid [`PAIRING_TTL_SECS`]).
    pub fn create_pairing_secret(&self) -> Result<String, AuthError> {
        let secret = random(16)?;
        let expires = chrono::Utc::now().timestamp() + PAIRING_TTL_SECS;
        self.pairing
            .insert(secret_hash(&secret), &expires.to_be_bytes())?;
        self.db.flush()?;
        Ok(secret)
    }

    /// Consumes a pairing secret: true once, if it was issued here and has not expired.
    pub fn take_pairing_secret(&self, secret: &str) -> Result<bool, AuthError> {
        let Some(v) = self.pairing.remove(secret_hash(secret))? else {
            return Ok(false);
        };
        self.db.flush()?;
        let expires = <[u8; 8]>::try_from(v.as_ref())
            .map(i64::from_be_bytes)
            .unwrap_or(0);
        Ok(chrono::Utc::now().timestamp() <= expires)
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
        let email = valid_email(email)?;
        if name.trim().is_empty() {
            return Err(AuthError::Invalid("name must not be empty".into()));
        }
        let hash = hash_new_password(password)?;
        let user = User {
            id: random(16)?,
            email: email.clone(),
            name: name.trim().to_owned(),
            is_admin: true,
            password: hash,
            created_at: crate::now_rfc3339(),
            storage_label: Some("admin".into()),
            ..Default::default()
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
        self.bump();
        Ok(user)
    }

    /// Adds a member to an initialized household (not an admin), as tooling and tests do.
    pub fn create_user(&self, email: &str, password: &str, name: &str) -> Result<User, AuthError> {
        self.create_member(&NewMember {
            email: email.into(),
            password: password.into(),
            name: name.into(),
            ..Default::default()
        })
    }

    /// Adds a household member (the admin's "add user").
    pub fn create_member(&self, m: &NewMember) -> Result<User, AuthError> {
        if !self.is_initialized() {
            return Err(AuthError::Invalid("create the admin first".into()));
        }
        let email = valid_email(&m.email)?;
        let hash = hash_new_password(&m.password)?;
        let user = User {
            id: random(16)?,
            email: email.clone(),
            name: clean_name(&m.name, "Member"),
            is_admin: m.is_admin,
            password: hash,
            created_at: crate::now_rfc3339(),
            should_change_password: m.should_change_password,
            quota_bytes: m.quota_bytes,
            storage_label: m.storage_label.as_deref().map(|l| clean_name(l, "")),
            ..Default::default()
        };
        self.claim_email(&email, &user.id)?;
        self.users.insert(user.id.as_bytes(), encode(&user)?)?;
        self.db.flush()?;
        self.bump();
        Ok(user)
    }

    fn claim_email(&self, email: &str, id: &str) -> Result<(), AuthError> {
        let claimed = self
            .emails
            .compare_and_swap(email.as_bytes(), None as Option<&[u8]>, Some(id.as_bytes()))?
            .is_ok();
        if !claimed {
            return Err(AuthError::Conflict(format!(
                "{email} already has an account"
            )));
        }
        Ok(())
    }

    /// Every account (deleted ones only when asked), oldest first.
    pub fn users(&self, with_deleted: bool) -> Result<Vec<User>, AuthError> {
        let mut out = Vec::new();
        for kv in self.users.iter() {
            let (_, v) = kv?;
            let u: User = decode(&v)?;
            if with_deleted || u.deleted_at.is_none() {
                out.push(u);
            }
        }
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    fn active_admins(&self) -> Result<usize, AuthError> {
        Ok(self.users(false)?.iter().filter(|u| u.is_admin).count())
    }

    /// Changes an account. A new password (set by an admin) ends the user's sessions; the last
    /// admin cannot lose the admin role.
    pub fn update_user(&self, id: &str, upd: &UserUpdate) -> Result<User, AuthError> {
        let mut u = self
            .user(id)?
            .ok_or_else(|| AuthError::NotFound("No such user".into()))?;
        if upd.is_admin == Some(false) && u.is_admin && self.active_admins()? <= 1 {
            return Err(AuthError::Invalid(
                "the household needs an admin: make someone else admin first".into(),
            ));
        }
        if let Some(email) = &upd.email {
            let email = valid_email(email)?;
            if email != u.email {
                self.claim_email(&email, &u.id)?;
                self.emails.remove(u.email.as_bytes())?;
                u.email = email;
            }
        }
        if let Some(name) = &upd.name {
            if name.trim().is_empty() {
                return Err(AuthError::Invalid("name must not be empty".into()));
            }
            u.name = clean_name(name, "Member");
        }
        let new_password = match &upd.password {
            Some(p) => {
                u.password = hash_new_password(p)?;
                true
            }
            None => false,
        };
        if let Some(a) = upd.is_admin {
            u.is_admin = a;
        }
        if let Some(s) = upd.should_change_password {
            u.should_change_password = s;
        }
        if let Some(q) = upd.quota_bytes {
            u.quota_bytes = q;
        }
        if let Some(l) = &upd.storage_label {
            u.storage_label = l
                .as_deref()
                .map(|l| clean_name(l, ""))
                .filter(|l| !l.is_empty());
        }
        if let Some(c) = &upd.avatar_color {
            u.avatar_color = Some(clean_name(c, "primary"));
        }
        u.updated_at = Some(crate::now_rfc3339());
        self.users.insert(u.id.as_bytes(), encode(&u)?)?;
        if new_password {
            for (sid, _) in self.sessions_of(&u)? {
                self.delete_session(&u, &sid)?;
            }
        }
        self.db.flush()?;
        self.bump();
        Ok(u)
    }

    /// Deletes an account (an admin's action): it can no longer sign in, its sessions and API
    /// keys end. The caller moves its photos to the trash; [`Auth::restore_user`] undoes this.
    pub fn delete_user(&self, id: &str) -> Result<User, AuthError> {
        let mut u = self
            .user(id)?
            .ok_or_else(|| AuthError::NotFound("No such user".into()))?;
        if u.deleted_at.is_some() {
            return Ok(u);
        }
        if u.is_admin && self.active_admins()? <= 1 {
            return Err(AuthError::Invalid(
                "the last admin cannot be deleted".into(),
            ));
        }
        u.deleted_at = Some(crate::now_rfc3339());
        u.updated_at = u.deleted_at.clone();
        self.users.insert(u.id.as_bytes(), encode(&u)?)?;
        for (sid, _) in self.sessions_of(&u)? {
            self.delete_session(&u, &sid)?;
        }
        for k in self.api_keys_of(&u)? {
            self.delete_api_key(&u, &k.id)?;
        }
        self.db.flush()?;
        self.bump();
        Ok(u)
    }

    /// Undoes [`Auth::delete_user`]: the account can sign in again (its photos stay in the
    /// trash, where the user restores what they want within the trash period).
    pub fn restore_user(&self, id: &str) -> Result<User, AuthError> {
        let mut u = self
            .user(id)?
            .ok_or_else(|| AuthError::NotFound("No such user".into()))?;
        u.deleted_at = None;
        u.updated_at = Some(crate::now_rfc3339());
        self.users.insert(u.id.as_bytes(), encode(&u)?)?;
        self.db.flush()?;
        self.bump();
        Ok(u)
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

    pub fn user_by_email(&self, email: &str) -> Result<Option<User>, AuthError> {
        let email = email.trim().to_lowercase();
        match self.emails.get(email.as_bytes())? {
            Some(id) => self.user(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    /// Checks credentials and opens a session; returns the user and the access token. An
    /// unknown email does the same Argon2 work as a wrong password.
    pub fn login(&self, email: &str, password: &str) -> Result<(User, String), AuthError> {
        self.login_from(email, password, "", "")
    }

    pub fn login_from(
        &self,
        email: &str,
        password: &str,
        device_type: &str,
        device_os: &str,
    ) -> Result<(User, String), AuthError> {
        let email = email.trim().to_lowercase();
        let user = match self.emails.get(email.as_bytes())? {
            Some(id) => self.user(&String::from_utf8_lossy(&id))?,
            None => None,
        };
        let Some(user) = user.filter(|u| u.deleted_at.is_none()) else {
            if let Ok(parsed) = PasswordHash::new(dummy_hash()) {
                let _ = Argon2::default().verify_password(password.as_bytes(), &parsed);
            }
            return Err(AuthError::BadCredentials);
        };
        self.verify_password(&user, password)?;
        let token = self.open_session(&user, device_type, device_os)?;
        Ok((user, token))
    }

    fn verify_password(&self, user: &User, password: &str) -> Result<(), AuthError> {
        let parsed =
            PasswordHash::new(&user.password).map_err(|e| AuthError::Corrupt(e.to_string()))?;
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .map_err(|_| AuthError::BadCredentials)
    }

    fn open_session(
        &self,
        user: &User,
        device_type: &str,
        device_os: &str,
    ) -> Result<String, AuthError> {
        let token = random(32)?;
        let now = crate::now_rfc3339();
        let session = Session {
            user_id: user.id.clone(),
            created_at: now.clone(),
            updated_at: now,
            device_type: clean_name(device_type, ""),
            device_os: clean_name(device_os, ""),
        };
        self.sessions
            .insert(secret_hash(&token), encode(&session)?)?;
        self.db.flush()?;
        self.bump();
        Ok(token)
    }

    /// Changes `user`'s password after checking the current one, and ends every other session
    /// of theirs (`keep`: the token of the session making the change, if any).
    pub fn change_password(
        &self,
        user: &User,
        current: &str,
        new: &str,
        keep: Option<&str>,
    ) -> Result<usize, AuthError> {
        self.verify_password(user, current)?;
        let hash = hash_new_password(new)?;
        let mut u = user.clone();
        u.password = hash;
        u.should_change_password = false;
        u.updated_at = Some(crate::now_rfc3339());
        self.users.insert(u.id.as_bytes(), encode(&u)?)?;
        let keep = keep.map(|t| hex(&secret_hash(t)));
        let mut ended = 0;
        for (id, _) in self.sessions_of(user)? {
            if Some(&id) != keep.as_ref() {
                self.delete_session(user, &id)?;
                ended += 1;
            }
        }
        self.db.flush()?;
        self.bump();
        Ok(ended)
    }

    /// A user's sessions: (id = hex of the token's hash, session).
    pub fn sessions_of(&self, user: &User) -> Result<Vec<(String, Session)>, AuthError> {
        let mut out = Vec::new();
        for kv in self.sessions.iter() {
            let (k, v) = kv?;
            let s = decode_session(&v);
            if s.user_id == user.id {
                out.push((hex(&k), s));
            }
        }
        Ok(out)
    }

    /// Ends one of `user`'s sessions (by id) and unpairs the devices that paired with it.
    /// Returns the unpaired device keys, or `None` if there was no such session of theirs.
    pub fn delete_session(&self, user: &User, id: &str) -> Result<Option<Vec<String>>, AuthError> {
        let Some(k) = unhex(id) else { return Ok(None) };
        match self.sessions.get(&k)? {
            Some(v) if decode_session(&v).user_id == user.id => {}
            _ => return Ok(None),
        }
        self.end_session(&k).map(Some)
    }

    /// The id of the session a token opened.
    pub fn session_id(token: &str) -> String {
        hex(&secret_hash(token))
    }

    /// Ends a login session, and unpairs the devices that paired with it (so the next person
    /// on that browser profile cannot sync as this user). Returns their keys.
    pub fn logout(&self, token: &str) -> Result<Vec<String>, AuthError> {
        self.end_session(&secret_hash(token))
    }

    /// Removes the session stored under `key` (the token's hash) and unpairs the devices that
    /// paired with it; returns their keys.
    fn end_session(&self, key: &[u8]) -> Result<Vec<String>, AuthError> {
        self.sessions.remove(key)?;
        let session = hex(key);
        let mut unpaired = Vec::new();
        for kv in self.devices.iter() {
            let (k, v) = kv?;
            let d: Device = decode(&v)?;
            if d.session.as_deref() == Some(session.as_str()) {
                self.devices.remove(k)?;
                unpaired.push(d.id);
            }
        }
        self.db.flush()?;
        self.bump();
        Ok(unpaired)
    }

    /// The user of a live session. A session idle for [`SESSION_IDLE_SECS`] has ended (and is
    /// removed); use slides the expiry (written at most hourly).
    pub fn user_by_token(&self, token: &str) -> Result<Option<User>, AuthError> {
        let k = secret_hash(token);
        let Some(v) = self.sessions.get(k)? else {
            return Ok(None);
        };
        let mut s = decode_session(&v);
        let now = chrono::Utc::now();
        let last = chrono::DateTime::parse_from_rfc3339(&s.updated_at)
            .map(|t| t.with_timezone(&chrono::Utc))
            .ok();
        if let Some(last) = last {
            let idle = (now - last).num_seconds();
            if idle > SESSION_IDLE_SECS {
                self.sessions.remove(k)?;
                self.bump();
                return Ok(None);
            }
            if idle > SESSION_REFRESH_SECS {
                s.updated_at = crate::now_rfc3339();
                self.sessions.insert(k, encode(&s)?)?;
            }
        } else {
            s.updated_at = crate::now_rfc3339();
            self.sessions.insert(k, encode(&s)?)?;
        }
        Ok(self.user(&s.user_id)?.filter(|u| u.deleted_at.is_none()))
    }

    /// A user's API keys (without secrets).
    pub fn api_keys_of(&self, user: &User) -> Result<Vec<ApiKey>, AuthError> {
        let mut out = Vec::new();
        for kv in self.keys.iter() {
            let (_, v) = kv?;
            let k: ApiKey = decode(&v)?;
            if k.user_id == user.id {
                out.push(k);
            }
        }
        Ok(out)
    }

    /// Renames (and optionally re-scopes) one of `user`'s keys; `None` if it is not theirs.
    pub fn update_api_key(
        &self,
        user: &User,
        id: &str,
        name: Option<&str>,
        permissions: Option<Vec<String>>,
    ) -> Result<Option<ApiKey>, AuthError> {
        for kv in self.keys.iter() {
            let (k, v) = kv?;
            let mut key: ApiKey = decode(&v)?;
            if key.id == id && key.user_id == user.id {
                if let Some(n) = name {
                    key.name = clean_name(n, &key.name);
                }
                if let Some(p) = permissions.filter(|p| !p.is_empty()) {
                    key.permissions = p;
                }
                self.keys.insert(k, encode(&key)?)?;
                self.db.flush()?;
                self.bump();
                return Ok(Some(key));
            }
        }
        Ok(None)
    }

    /// Revokes one of `user`'s keys at once. Returns whether it existed.
    pub fn delete_api_key(&self, user: &User, id: &str) -> Result<bool, AuthError> {
        for kv in self.keys.iter() {
            let (k, v) = kv?;
            let key: ApiKey = decode(&v)?;
            if key.id == id && key.user_id == user.id {
                self.keys.remove(k)?;
                self.db.flush()?;
                self.bump();
                return Ok(true);
            }
        }
        Ok(false)
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
        self.bump();
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
                Ok(self.user(&key.user_id)?.filter(|u| u.deleted_at.is_none()))
            }
            None => Ok(None),
        }
    }
}
