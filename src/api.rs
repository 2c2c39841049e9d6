//! The server API: what a business backend asks of the hub over HTTP (docs/API.md).
//!
//! Under `/api/`, on only when `--api-key` is set; every request carries
//! `Authorization: Bearer <key>`. Handlers check the key, read and check the JSON body
//! themselves (so every refusal is the API's own JSON error with a fitting status), send
//! the hub one message, and answer with what the router did. The OpenAPI document at
//! `/api/openapi.json` is generated from the types and handlers below (utoipa).

use std::sync::Arc;
use std::time::Instant;

use actix::Addr;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use subtle::ConstantTimeEq;
use utoipa::{OpenApi, ToSchema};

use crate::cluster::presence::{Answer as Presence, PresenceReader, Query};
use crate::error::{ErrorCode, ReplyError};
use crate::hub::{self, Hub, Listed, Target};
use crate::protocol::MAX_PAGE;
use crate::router::Listing;

/// What the API handlers share.
pub struct Api {
    hub: Addr<Hub>,
    /// SHA-256 of the key: compared in constant time, whatever the length of the guess.
    key_digest: [u8; 32],
    max_body: usize,
    started: Instant,
    /// Cluster mode: the listings answer for the whole cluster, read from Redis.
    presence: Option<PresenceReader>,
}

impl Api {
    pub fn new(hub: Addr<Hub>, key: &str, max_body: usize) -> Self {
        Api {
            hub,
            key_digest: digest(key),
            max_body,
            started: Instant::now(),
            presence: None,
        }
    }

    /// The same API listing the cluster's users and groups (cluster mode).
    pub fn with_presence(mut self, reader: PresenceReader) -> Self {
        self.presence = Some(reader);
        self
    }
}

impl Api {
    /// Whether the request carries the key (`Authorization: Bearer <key>`).
    pub fn allows(&self, req: &HttpRequest) -> bool {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::opening::bearer)
            .unwrap_or("");
        bool::from(digest(given).ct_eq(&self.key_digest)) && !given.is_empty()
    }
}

fn digest(text: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Registers the API's routes under `/api`.
pub fn configure(api: Arc<Api>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        // Another method gets 405 with `Allow` naming the one there is (RFC 9110).
        let resource = |path: &str, allow: &'static str| {
            web::resource(path).default_service(web::to(move || async move {
                let mut response = ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    format!("use {allow} here"),
                )
                .response();
                response
                    .headers_mut()
                    .insert(header::ALLOW, header::HeaderValue::from_static(allow));
                response
            }))
        };
        cfg.app_data(web::Data::from(api)).service(
            web::scope("/api")
                // Every call counted by endpoint and status, and logged at debug.
                .wrap_fn(|req, srv| {
                    use actix_web::dev::Service;
                    let started = Instant::now();
                    let method = req.method().clone();
                    let call = srv.call(req);
                    async move {
                        let res = call.await?;
                        let endpoint = res
                            .request()
                            .match_pattern()
                            .unwrap_or_else(|| "other".to_owned());
                        let status = res.status().as_u16();
                        crate::metrics::METRICS.api(&endpoint, status);
                        log::debug!(
                            "api {method} {endpoint}: {status} in {:.1} ms",
                            started.elapsed().as_secs_f64() * 1000.0
                        );
                        Ok(res)
                    }
                })
                .service(resource("/publish", "POST").route(web::post().to(publish)))
                .service(resource("/send", "POST").route(web::post().to(send)))
                .service(resource("/broadcast", "POST").route(web::post().to(broadcast)))
                .service(resource("/subscribe", "POST").route(web::post().to(subscribe)))
                .service(resource("/unsubscribe", "POST").route(web::post().to(unsubscribe)))
                .service(resource("/disconnect", "POST").route(web::post().to(disconnect)))
                .service(resource("/users", "GET").route(web::get().to(users)))
                .service(resource("/users/{name}", "GET").route(web::get().to(user)))
                .service(resource("/groups", "GET").route(web::get().to(groups)))
                .service(resource("/groups/{group}", "GET").route(web::get().to(group)))
                .service(
                    resource("/groups/{group}/messages", "GET")
                        .route(web::get().to(group_messages)),
                )
                .service(resource("/info", "GET").route(web::get().to(info)))
                .service(resource("/openapi.json", "GET").route(web::get().to(openapi)))
                .default_service(web::to(|| async {
                    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint").response()
                })),
        );
    }
}

// ---- errors ---------------------------------------------------------------------------

/// Every refusal: the protocol's error codes, with an HTTP status.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    #[serde(skip)]
    status: StatusCode,
    /// Stable: `bad_request`, `unauthorized`, `not_found`, `invalid_name`,
    /// `invalid_group`, `forbidden`, `too_large`, `unsupported_media_type`,
    /// `method_not_allowed`, `overloaded`, `internal`.
    code: String,
    /// For people; may change.
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(self)
    }
}

impl From<ReplyError> for ApiError {
    fn from(e: ReplyError) -> Self {
        let status = match e.code {
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Overloaded | ErrorCode::RateLimited => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        let code = serde_json::to_value(e.code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "internal".to_owned());
        ApiError {
            status,
            code,
            message: e.message.into_owned(),
        }
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(_: actix::MailboxError) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the hub is shutting down or busy; retry shortly",
        )
    }
}

type Answer = Result<HttpResponse, ApiError>;

impl actix_web::ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        self.response()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

// ---- checks shared by every handler ----------------------------------------------------

/// The key, compared in constant time. Missing and wrong get the same answer.
fn authorize(req: &HttpRequest, api: &Api) -> Result<(), ApiError> {
    if api.allows(req) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required: Authorization: Bearer <key>",
        ))
    }
}

/// The request's JSON body: `application/json`, at most `--max-message-bytes`, a JSON
/// object of the expected shape.
async fn read_json<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    mut payload: web::Payload,
    api: &Api,
) -> Result<T, ApiError> {
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send JSON with Content-Type: application/json",
        ));
    }
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than {} bytes", api.max_body),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > api.max_body) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad(format!("cannot read the body: {e}")))?;
        if body.len() + chunk.len() > api.max_body {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("malformed request: {e}")))
}

/// The name a message is sent as: `system` unless given. Any name a client could take,
/// and names no client can (`system`, with a space, ...), but not empty, not longer than
/// a user name, and without control characters.
fn sender(from: Option<String>) -> Result<Arc<str>, ApiError> {
    let from = from.unwrap_or_else(|| "system".to_owned());
    let chars = from.chars().count();
    if !(1..=crate::protocol::MAX_NAME_CHARS).contains(&chars) || from.chars().any(char::is_control)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_name",
            "`from` has 1 to 64 characters, none of them control characters",
        ));
    }
    Ok(from.into())
}

// ---- the endpoints ----------------------------------------------------------------------

/// `publish`: a message to every member of a group.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// 1 to 64 of `A-Z a-z 0-9 _ . : -`.
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,64}$")]
    group: String,
    /// Any JSON, passed on as it is.
    #[schema(value_type = serde_json::Value)]
    body: Box<RawValue>,
    /// The sender's name in the event; default `system`.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64)]
    from: Option<String>,
}

/// `send`: a message to every session of a user.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The user's name (docs/PROTOCOL.md, "join": the naming rules).
    #[schema(min_length = 1, max_length = 64)]
    to: String,
    #[schema(value_type = serde_json::Value)]
    body: Box<RawValue>,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64)]
    from: Option<String>,
}

/// `broadcast`: a message to every joined session.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BroadcastRequest {
    #[schema(value_type = serde_json::Value)]
    body: Box<RawValue>,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64)]
    from: Option<String>,
}

/// What a message did.
#[derive(Serialize, ToSchema)]
pub struct Delivered {
    /// Sessions that took it.
    delivered: usize,
    /// `send` to a user offline now but seen within the history window: kept for them.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stored: bool,
    /// Cluster mode: the other nodes were told too (`delivered` counts this node's sessions).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    cluster: bool,
}

async fn post(api: &Api, from: Option<String>, target: Target, body: Box<RawValue>) -> Answer {
    let from = sender(from)?;
    let outcome = api
        .hub
        .send(hub::ServerPost { from, target, body })
        .await??;
    Ok(HttpResponse::Ok().json(Delivered {
        delivered: outcome.delivered,
        stored: outcome.stored,
        cluster: outcome.cluster,
    }))
}

#[utoipa::path(post, path = "/api/publish", request_body = PublishRequest, tag = "messages",
    responses((status = 200, description = "routed", body = Delivered), ErrorResponses),
    security(("api_key" = [])))]
async fn publish(req: HttpRequest, payload: web::Payload, api: web::Data<Api>) -> Answer {
    authorize(&req, &api)?;
    let r: PublishRequest = read_json(&req, payload, &api).await?;
    post(&api, r.from, Target::Group(r.group), r.body).await
}

#[utoipa::path(post, path = "/api/send", request_body = SendRequest, tag = "messages",
    responses((status = 200, description = "routed, or stored", body = Delivered), ErrorResponses),
    security(("api_key" = [])))]
async fn send(req: HttpRequest, payload: web::Payload, api: web::Data<Api>) -> Answer {
    authorize(&req, &api)?;
    let r: SendRequest = read_json(&req, payload, &api).await?;
    post(&api, r.from, Target::User(r.to), r.body).await
}

#[utoipa::path(post, path = "/api/broadcast", request_body = BroadcastRequest, tag = "messages",
    responses((status = 200, description = "routed", body = Delivered), ErrorResponses),
    security(("api_key" = [])))]
async fn broadcast(req: HttpRequest, payload: web::Payload, api: web::Data<Api>) -> Answer {
    authorize(&req, &api)?;
    let r: BroadcastRequest = read_json(&req, payload, &api).await?;
    post(&api, r.from, Target::Everyone, r.body).await
}

/// `subscribe` / `unsubscribe`: every live session of a user.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MembershipRequest {
    #[schema(min_length = 1, max_length = 64)]
    name: String,
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,64}$")]
    group: String,
}

/// How many sessions it changed.
#[derive(Serialize, ToSchema)]
pub struct Sessions {
    sessions: usize,
}

async fn membership(req: HttpRequest, payload: web::Payload, api: &Api, subscribe: bool) -> Answer {
    authorize(&req, api)?;
    let r: MembershipRequest = read_json(&req, payload, api).await?;
    let sessions = api
        .hub
        .send(hub::ServerSubscribe {
            name: r.name,
            group: r.group,
            subscribe,
        })
        .await??;
    Ok(HttpResponse::Ok().json(Sessions { sessions }))
}

#[utoipa::path(post, path = "/api/subscribe", request_body = MembershipRequest, tag = "users",
    responses((status = 200, description = "every live session of the user subscribed", body = Sessions), ErrorResponses),
    security(("api_key" = [])))]
async fn subscribe(req: HttpRequest, payload: web::Payload, api: web::Data<Api>) -> Answer {
    membership(req, payload, &api, true).await
}

#[utoipa::path(post, path = "/api/unsubscribe", request_body = MembershipRequest, tag = "users",
    responses((status = 200, description = "every live session of the user unsubscribed", body = Sessions), ErrorResponses),
    security(("api_key" = [])))]
async fn unsubscribe(req: HttpRequest, payload: web::Payload, api: web::Data<Api>) -> Answer {
    membership(req, payload, &api, false).await
}

/// `disconnect`: every session of a user, closed with 1008.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisconnectRequest {
    #[schema(min_length = 1, max_length = 64)]
    name: String,
    /// The close frame's reason text, cut to 123 bytes (what a close frame holds);
    /// default "disconnected by the server".
    #[serde(default)]
    reason: Option<String>,
}

/// How many sessions were closed.
#[derive(Serialize, ToSchema)]
pub struct Closed {
    closed: usize,
}

#[utoipa::path(post, path = "/api/disconnect", request_body = DisconnectRequest, tag = "users",
    responses((status = 200, description = "closed (0 when the user had no session)", body = Closed), ErrorResponses),
    security(("api_key" = [])))]
async fn disconnect(req: HttpRequest, payload: web::Payload, api: web::Data<Api>) -> Answer {
    authorize(&req, &api)?;
    let r: DisconnectRequest = read_json(&req, payload, &api).await?;
    let name = crate::protocol::normalize_name(&r.name)?;
    let closed = api
        .hub
        .send(hub::DisconnectUser {
            name,
            note: r.reason.map(|t| Arc::from(cut(&t, 123))),
        })
        .await?;
    Ok(HttpResponse::Ok().json(Closed { closed }))
}

/// `text` cut to at most `max` bytes, at a character boundary (a close frame's reason
/// holds 123: RFC 6455, 5.5).
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A page of a listing.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Entries per page, 1 to 1000; default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The `next` of the previous page.
    after: Option<String>,
}

/// `GET /api/users`: a page, optionally of the names that start with `prefix`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsersQuery {
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    after: Option<String>,
    /// Only names that start with this (the admin console's search).
    prefix: Option<String>,
}

/// `GET /api/groups`: a page by name, or the busiest by member count.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GroupsQuery {
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    after: Option<String>,
    /// `members`: the `limit` groups with the most members, most first (no paging).
    order: Option<GroupOrder>,
}

#[derive(Deserialize, ToSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GroupOrder {
    Name,
    Members,
}

fn query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::bad(format!("bad query: {e}")))
}

fn limit(limit: Option<i64>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(100),
        Some(n) if (1..=MAX_PAGE as i64).contains(&n) => Ok(n as usize),
        Some(_) => Err(ApiError::bad("`limit` is 1 to 1000")),
    }
}

fn page(req: &HttpRequest) -> Result<(Option<String>, usize), ApiError> {
    let q: PageQuery = query(req)?;
    Ok((q.after, limit(q.limit)?))
}

/// A user and its live sessions.
#[derive(Serialize, ToSchema)]
pub struct UserEntry {
    name: String,
    sessions: usize,
}

/// One page of the online users, sorted by name.
#[derive(Serialize, ToSchema)]
pub struct UsersPage {
    users: Vec<UserEntry>,
    /// Online users in all.
    count: usize,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// A group and its member count.
#[derive(Serialize, ToSchema)]
pub struct GroupEntry {
    group: String,
    members: usize,
}

/// One page of the groups, sorted by name.
#[derive(Serialize, ToSchema)]
pub struct GroupsPage {
    groups: Vec<GroupEntry>,
    count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// One page of a group's users, with their sessions in it.
#[derive(Serialize, ToSchema)]
pub struct MembersPage {
    group: String,
    members: Vec<UserEntry>,
    /// Members in all (anonymous market watchers count one each).
    count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

async fn listing(
    api: &Api,
    what: Listed,
    after: Option<String>,
    limit: usize,
) -> Result<Listing, ApiError> {
    if let Some(reader) = &api.presence {
        return cluster_listing(reader, what, after, limit).await;
    }
    Ok(api.hub.send(hub::List { what, after, limit }).await??)
}

/// Cluster mode's listings: from the cluster's presence, not this node's sessions.
async fn cluster_listing(
    reader: &PresenceReader,
    what: Listed,
    after: Option<String>,
    limit: usize,
) -> Result<Listing, ApiError> {
    let query = match what {
        Listed::Users => Query::Users {
            prefix: None,
            after,
            limit,
        },
        Listed::UsersWithPrefix(prefix) => Query::Users {
            prefix: Some(prefix),
            after,
            limit,
        },
        Listed::Groups => Query::Groups { after, limit },
        Listed::TopGroups => Query::TopGroups { limit },
        Listed::Members(group) => {
            if !crate::protocol::valid_group(&group) {
                return Err(
                    ReplyError::new(ErrorCode::InvalidGroup, crate::protocol::GROUP_RULE).into(),
                );
            }
            let answer = reader
                .read(Query::Members {
                    group: group.clone(),
                    after,
                    limit,
                })
                .await?;
            return match answer {
                Presence::Members(m) if m.listing.count > 0 => Ok(m.listing),
                _ => Err(
                    ReplyError::new(ErrorCode::NotFound, format!("nobody is in {group}")).into(),
                ),
            };
        }
    };
    match reader.read(query).await? {
        Presence::Listing(listing) => Ok(listing),
        _ => Err(ReplyError::new(ErrorCode::Internal, "unexpected presence answer").into()),
    }
}

#[utoipa::path(get, path = "/api/users", params(UsersQuery), tag = "listings",
    responses((status = 200, description = "a page of users", body = UsersPage), ErrorResponses),
    security(("api_key" = [])))]
async fn users(req: HttpRequest, api: web::Data<Api>) -> Answer {
    authorize(&req, &api)?;
    let q: UsersQuery = query(&req)?;
    let what = match q.prefix {
        Some(prefix) if !prefix.is_empty() => Listed::UsersWithPrefix(prefix),
        _ => Listed::Users,
    };
    let l = listing(&api, what, q.after, limit(q.limit)?).await?;
    Ok(HttpResponse::Ok().json(UsersPage {
        users: l
            .entries
            .into_iter()
            .map(|(name, sessions)| UserEntry { name, sessions })
            .collect(),
        count: l.count,
        next: l.next,
    }))
}

#[utoipa::path(get, path = "/api/groups", params(GroupsQuery), tag = "listings",
    responses((status = 200, description = "a page of groups, or the busiest", body = GroupsPage), ErrorResponses),
    security(("api_key" = [])))]
async fn groups(req: HttpRequest, api: web::Data<Api>) -> Answer {
    authorize(&req, &api)?;
    let q: GroupsQuery = query(&req)?;
    let what = match q.order {
        Some(GroupOrder::Members) => Listed::TopGroups,
        _ => Listed::Groups,
    };
    let l = listing(&api, what, q.after, limit(q.limit)?).await?;
    Ok(HttpResponse::Ok().json(GroupsPage {
        groups: l
            .entries
            .into_iter()
            .map(|(group, members)| GroupEntry { group, members })
            .collect(),
        count: l.count,
        next: l.next,
    }))
}

#[utoipa::path(get, path = "/api/groups/{group}", params(("group" = String, Path, description = "the group's name", pattern = r"^[A-Za-z0-9_.:-]{1,64}$"), PageQuery), tag = "listings",
    responses((status = 200, description = "a page of the group's members", body = MembersPage), ErrorResponses),
    security(("api_key" = [])))]
async fn group(req: HttpRequest, api: web::Data<Api>) -> Answer {
    authorize(&req, &api)?;
    let name = req.match_info().get("group").unwrap_or_default().to_owned();
    let (after, limit) = page(&req)?;
    let l = listing(&api, Listed::Members(name.clone()), after, limit).await?;
    Ok(HttpResponse::Ok().json(MembersPage {
        group: name,
        members: l
            .entries
            .into_iter()
            .map(|(name, sessions)| UserEntry { name, sessions })
            .collect(),
        count: l.count,
        next: l.next,
    }))
}

/// A user's live sessions and groups.
#[derive(Serialize, ToSchema)]
pub struct UserDetail {
    name: String,
    sessions: usize,
    /// Every group any of the sessions is in, sorted.
    groups: Vec<String>,
}

#[utoipa::path(get, path = "/api/users/{name}", params(("name" = String, Path, description = "the user's name")), tag = "listings",
    responses((status = 200, description = "the user's sessions and groups", body = UserDetail), ErrorResponses),
    security(("api_key" = [])))]
async fn user(req: HttpRequest, api: web::Data<Api>) -> Answer {
    authorize(&req, &api)?;
    let name = req.match_info().get("name").unwrap_or_default().to_owned();
    let (sessions, groups) = match &api.presence {
        Some(reader) => {
            let normal = crate::protocol::normalize_name(&name)?;
            match reader.read(Query::User(normal.clone())).await? {
                Presence::User(Some(found)) => found,
                _ => {
                    return Err(ReplyError::new(
                        ErrorCode::NotFound,
                        format!("{normal} is not online"),
                    )
                    .into())
                }
            }
        }
        None => api.hub.send(hub::UserInfo { name: name.clone() }).await??,
    };
    Ok(HttpResponse::Ok().json(UserDetail {
        name: crate::protocol::normalize_name(&name)?,
        sessions,
        groups,
    }))
}

/// A group's newest kept messages (docs/PROTOCOL.md, "History and recovery").
#[derive(Serialize, ToSchema)]
pub struct GroupMessagesPage {
    /// Always `history`: the same reply a client's `history` with a `group` gets.
    #[serde(rename = "type")]
    kind: String,
    group: String,
    epoch: String,
    offset: u64,
    /// `message` events, oldest first.
    messages: Vec<serde_json::Value>,
}

/// How many of a group's newest messages.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessagesQuery {
    /// 1 to 1000; default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/groups/{group}/messages", params(("group" = String, Path, description = "the group's name", pattern = r"^[A-Za-z0-9_.:-]{1,64}$"), MessagesQuery), tag = "listings",
    responses((status = 200, description = "the newest messages the group's stream holds", body = GroupMessagesPage), ErrorResponses),
    security(("api_key" = [])))]
async fn group_messages(req: HttpRequest, api: web::Data<Api>) -> Answer {
    authorize(&req, &api)?;
    let group = req.match_info().get("group").unwrap_or_default().to_owned();
    let q: MessagesQuery = query(&req)?;
    let frame = api
        .hub
        .send(hub::GroupMessages {
            group,
            limit: limit(q.limit)?,
        })
        .await??;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(frame.into_bytes()))
}

/// The hub at a glance.
#[derive(Serialize, ToSchema)]
pub struct Info {
    version: String,
    uptime_seconds: u64,
    /// Live WebSocket sessions.
    connections: usize,
    users: usize,
    groups: usize,
    /// Messages posted (direct, broadcast, publish) since start.
    messages_in: u64,
    /// Their deliveries to sessions other than the sender's.
    messages_out: u64,
    /// Bytes written to WebSocket clients since start.
    bytes_out: u64,
}

#[utoipa::path(get, path = "/api/info", tag = "listings",
    responses((status = 200, description = "counters", body = Info), ErrorResponses),
    security(("api_key" = [])))]
async fn info(req: HttpRequest, api: web::Data<Api>) -> Answer {
    authorize(&req, &api)?;
    let stats = api.hub.send(hub::GetStats).await?;
    Ok(HttpResponse::Ok().json(Info {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: api.started.elapsed().as_secs(),
        connections: stats.sessions,
        users: stats.users,
        groups: stats.groups,
        messages_in: stats.messages_in,
        messages_out: stats.messages_out,
        bytes_out: crate::metrics::METRICS.bytes_out.get(),
    }))
}

/// The OpenAPI document of this API (no key needed: it holds nothing secret).
async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document())
}

/// The refusals every endpoint may answer.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // only its shape is used, by the document
enum ErrorResponses {
    /// Malformed JSON, a missing or mistyped field, a bad name or group.
    #[response(status = 400)]
    BadRequest(ApiError),
    /// No key, or a wrong one.
    #[response(status = 401)]
    Unauthorized(ApiError),
    /// What the group's policy does not allow.
    #[response(status = 403)]
    Forbidden(ApiError),
    /// No such user, group or endpoint.
    #[response(status = 404)]
    NotFound(ApiError),
    /// Another method than the endpoint's.
    #[response(status = 405)]
    MethodNotAllowed(ApiError),
    /// A body over `--max-message-bytes`.
    #[response(status = 413)]
    TooLarge(ApiError),
    /// A body that is not `application/json`.
    #[response(status = 415)]
    UnsupportedMediaType(ApiError),
    /// The hub is busy or shutting down: retry shortly.
    #[response(status = 503)]
    Overloaded(ApiError),
}

#[derive(OpenApi)]
#[openapi(
    info(title = "wxhub server API", description = "What a business backend asks of the hub: push to a user, a group or everyone, manage memberships, disconnect, list. Every request needs `Authorization: Bearer <key>` (`--api-key`)."),
    paths(publish, send, broadcast, subscribe, unsubscribe, disconnect, users, user, groups, group, group_messages, info),
    components(schemas(ApiError)),
    modifiers(&Security),
)]
struct Document;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI 3 document, as JSON.
pub fn document() -> String {
    Document::openapi()
        .to_json()
        .unwrap_or_else(|e| format!(r#"{{"error":"{e}"}}"#))
}
