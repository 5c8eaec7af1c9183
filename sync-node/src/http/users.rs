//! The household's accounts in Immich's shapes: `GET /api/users[/{id}]` (members see each
//! other's name and email, to share with them), `GET|PUT /api/users/me`, and the admin's
//! `/api/admin/users` (add a member with an initial password they must change and a quota,
//! reset a password, make admin, delete — photos to the trash first — and restore).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{NewMember, User, UserUpdate};
use crate::housekeeping::{self, Action};
use crate::http::*;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/users", get(list_users))
        .route("/users/me", get(users_me).put(update_me))
        .route("/users/me/preferences", get(preferences))
        .route("/users/{id}", get(get_user))
        .route("/admin/users", get(admin_list).post(admin_create))
        .route(
            "/admin/users/{id}",
            get(admin_get).put(admin_update).delete(admin_delete),
        )
        .route("/admin/users/{id}/restore", post(admin_restore))
}

/// Immich's `UserPreferencesResponseDto`, every sub-object present (its mobile app reads them
/// all): the defaults, with the features Tessera has switched on.
async fn preferences(_u: AuthUser) -> Json<Value> {
    Json(json!({
        "albums": {"defaultAssetOrder": "desc"},
        "cast": {"gCastEnabled": false},
        "download": {"archiveSize": 4294967296u64, "includeEmbeddedVideos": false},
        "emailNotifications": {"albumInvite": false, "albumUpdate": false, "enabled": false},
        "folders": {"enabled": false, "sidebarWeb": false},
        "memories": {"duration": 5, "enabled": false, "sidebarWeb": false},
        "people": {"enabled": true, "sidebarWeb": false},
        "purchase": {"hideBuyButtonUntil": "2100-01-01T00:00:00.000Z", "showSupportBadge": false},
        "ratings": {"enabled": false},
        "recentlyAdded": {"enabled": false, "sidebarWeb": false},
        "sharedLinks": {"enabled": true, "sidebarWeb": true},
        "tags": {"enabled": false, "sidebarWeb": false},
    }))
}

/// Immich's `UserResponseDto`: what any member may see of another.
pub(crate) fn user_brief(u: &User) -> Value {
    json!({
        "id": u.id, "email": u.email, "name": u.name, "profileImagePath": "",
        "avatarColor": u.avatar_color.as_deref().unwrap_or("primary"),
        "profileChangedAt": u.updated_at.as_deref().unwrap_or(&u.created_at),
    })
}

/// Immich's `UserAdminResponseDto` (also `users/me`), with the usage of the user's originals.
pub(crate) fn user_json(u: &User) -> Value {
    user_json_with(u, None)
}

fn user_json_with(u: &User, usage: Option<u64>) -> Value {
    let status = if u.deleted_at.is_some() {
        "deleted"
    } else {
        "active"
    };
    json!({
        "id": u.id, "email": u.email, "name": u.name, "isAdmin": u.is_admin,
        "createdAt": u.created_at, "updatedAt": u.updated_at.as_deref().unwrap_or(&u.created_at),
        "deletedAt": u.deleted_at, "oauthId": "", "profileImagePath": "",
        "profileChangedAt": u.updated_at.as_deref().unwrap_or(&u.created_at),
        "avatarColor": u.avatar_color.as_deref().unwrap_or("primary"),
        "shouldChangePassword": u.should_change_password, "status": status,
        "storageLabel": u.storage_label, "quotaSizeInBytes": u.quota_bytes,
        "quotaUsageInBytes": usage.unwrap_or(0), "license": null,
    })
}

/// Bytes of a user's live originals (what counts against a quota; photos shared with them
/// never do).
/// Shard by shard: `users/me`, which apps call often, never holds a whole library.
pub(crate) fn usage_of(node: &crate::Node, user: &str) -> ApiResult<u64> {
    let mut total = 0u64;
    housekeeping::for_each_shard(node, user, |_, records| {
        total = total.saturating_add(usage(records));
        Ok(())
    })?;
    Ok(total)
}

/// Bytes of the live originals among a user's records.
pub(crate) fn usage(records: &[tessera_core::AssetRecord]) -> u64 {
    records
        .iter()
        .filter(|r| !r.is_purged())
        .fold(0u64, |total, r| total.saturating_add(r.size.unwrap_or(0)))
}

async fn with_usage(node: AppState, u: User) -> ApiResult<Value> {
    let id = u.id.clone();
    let usage = blocking(move || usage_of(&node, &id)).await?;
    Ok(user_json_with(&u, Some(usage)))
}

async fn users_me(State(node): State<AppState>, AuthUser(u): AuthUser) -> ApiResult<Json<Value>> {
    Ok(Json(with_usage(node, u).await?))
}

async fn list_users(State(node): State<AppState>, _u: AuthUser) -> ApiResult<Json<Value>> {
    let users = node.auth.users(false)?;
    Ok(Json(Value::Array(users.iter().map(user_brief).collect())))
}

async fn get_user(
    State(node): State<AppState>,
    _u: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    match node.auth.user(&id)? {
        Some(u) if u.deleted_at.is_none() => Ok(Json(user_brief(&u))),
        _ => Err(ApiError::not_found("No such user")),
    }
}

/// Immich's `UserUpdateMeDto`: a user changes their own name, email, colour (the password
/// through `POST /api/auth/change-password`, which checks the current one).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateMe {
    email: Option<String>,
    name: Option<String>,
    avatar_color: Option<String>,
    password: Option<String>,
}

async fn update_me(
    State(node): State<AppState>,
    AuthUser(u): AuthUser,
    Json(b): Json<UpdateMe>,
) -> ApiResult<Json<Value>> {
    if b.password.is_some() {
        return Err(ApiError::bad_request(
            "change your password with POST /api/auth/change-password (it needs the current one)",
        ));
    }
    let upd = UserUpdate {
        email: b.email,
        name: b.name,
        avatar_color: b.avatar_color,
        ..Default::default()
    };
    let n = node.clone();
    let u = blocking(move || Ok(n.auth.update_user(&u.id, &upd)?)).await?;
    Ok(Json(with_usage(node, u).await?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    #[serde(default)]
    with_deleted: bool,
}

async fn admin_list(
    State(node): State<AppState>,
    _a: AdminUser,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let mut out = Vec::new();
    for u in node.auth.users(q.with_deleted)? {
        out.push(with_usage(node.clone(), u).await?);
    }
    Ok(Json(Value::Array(out)))
}

/// Immich's `UserAdminCreateDto`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateUser {
    email: String,
    password: String,
    name: String,
    #[serde(default)]
    is_admin: bool,
    /// Immich's default is false; the PWA's Admin page asks for a change by default.
    #[serde(default)]
    should_change_password: bool,
    quota_size_in_bytes: Option<u64>,
    storage_label: Option<String>,
}

async fn admin_create(
    State(node): State<AppState>,
    _a: AdminUser,
    Json(b): Json<CreateUser>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let m = NewMember {
        email: b.email,
        password: b.password,
        name: b.name,
        is_admin: b.is_admin,
        should_change_password: b.should_change_password,
        quota_bytes: b.quota_size_in_bytes,
        storage_label: b.storage_label,
    };
    let n = node.clone();
    let u = tokio::task::spawn_blocking(move || n.auth.create_member(&m)).await??;
    tracing::info!(user = %u.id, "household member added");
    Ok((StatusCode::CREATED, Json(with_usage(node, u).await?)))
}

async fn admin_get(
    State(node): State<AppState>,
    _a: AdminUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let u = node
        .auth
        .user(&id)?
        .ok_or_else(|| ApiError::not_found("No such user"))?;
    Ok(Json(with_usage(node, u).await?))
}

/// Immich's `UserAdminUpdateDto`. `quotaSizeInBytes: null` removes the quota.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdminUpdate {
    email: Option<String>,
    password: Option<String>,
    name: Option<String>,
    is_admin: Option<bool>,
    should_change_password: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    quota_size_in_bytes: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    storage_label: Option<Option<String>>,
    avatar_color: Option<String>,
}

/// A field that is present (possibly `null`) is `Some`; an absent one stays `None`.
fn present<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

async fn admin_update(
    State(node): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<String>,
    Json(b): Json<AdminUpdate>,
) -> ApiResult<Json<Value>> {
    if id == admin.id && b.is_admin == Some(false) {
        return Err(ApiError::bad_request(
            "you cannot remove your own admin role",
        ));
    }
    // A password an admin sets is a temporary one unless they say otherwise.
    let reset = b.password.is_some();
    let upd = UserUpdate {
        email: b.email,
        password: b.password,
        name: b.name,
        is_admin: b.is_admin,
        should_change_password: b.should_change_password.or(reset.then_some(true)),
        quota_bytes: b.quota_size_in_bytes,
        storage_label: b.storage_label,
        avatar_color: b.avatar_color,
    };
    let n = node.clone();
    let u = blocking(move || Ok(n.auth.update_user(&id, &upd)?)).await?;
    Ok(Json(with_usage(node, u).await?))
}

#[derive(Deserialize, Default)]
struct DeleteBody {
    #[serde(default)]
    force: bool,
}

/// Deletes an account: it cannot sign in any more, and every photo of theirs goes to the
/// trash (restorable for the trash period; never deleted silently). `force` (Immich: delete
/// at once) is refused: photos always pass through the trash.
async fn admin_delete(
    State(node): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<String>,
    body: Option<Json<DeleteBody>>,
) -> ApiResult<Json<Value>> {
    if body.is_some_and(|Json(b)| b.force) {
        return Err(ApiError::bad_request(
            "Tessera never deletes photos at once: deleting an account moves them to its trash",
        ));
    }
    if id == admin.id {
        return Err(ApiError::bad_request("you cannot delete your own account"));
    }
    let n = node.clone();
    let u = blocking(move || {
        let u = n.auth.delete_user(&id)?;
        let ids = live_asset_ids(&n, &u.id)?;
        let trashed = housekeeping::apply(&n, &u.id, &ids, Action::Trash)?;
        tracing::info!(user = %u.id, trashed, "account deleted; its photos are in its trash");
        Ok(u)
    })
    .await?;
    Ok(Json(with_usage(node, u).await?))
}

fn live_asset_ids(node: &crate::Node, user: &str) -> ApiResult<Vec<String>> {
    Ok(housekeeping::user_assets(node, user)?
        .into_iter()
        .filter(|r| !r.is_purged() && !r.is_trashed())
        .map(|r| r.id)
        .collect())
}

async fn admin_restore(
    State(node): State<AppState>,
    _a: AdminUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let n = node.clone();
    let u = blocking(move || Ok(n.auth.restore_user(&id)?)).await?;
    Ok(Json(with_usage(node, u).await?))
}
