//! `/v1/models` on the Control Plane (deployments: users' named handles on the models this
//! process serves), `:validate`, `:search-by-infra`, `check`, `{id}:chat`, and the admin
//! list. Status is live: `MODEL_STATUS_UP` while the inference side serves the model and is
//! healthy.

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{Map, Value};
use tm_api::control::{
    ChatReply, Deployment, DeploymentReply, Deployments, DeploymentsPage, Empty, MemoryCheck, ModelStatus, Validity,
};
use tm_control::deployments::NewDeployment;
use tm_control::ControlError;
use tm_gateway::GatewayError;
use utoipa::ToSchema;

use super::error::CpError;
use super::extract::{Body, Params, SignedIn};
use super::query::{ForUser, Page};
use super::ControlState;

const GIB: f64 = (1u64 << 30) as f64;
const MAX_ADMIN_PAGE: i64 = 500;
const MAX_CHAT_CHARS: usize = 100_000;

#[utoipa::path(get, path = "/v1/models", tag = "models",
    params(ForUser),
    responses((status = 200, body = Deployments)),
)]
pub async fn list(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    params: Params,
) -> Result<Json<Deployments>, CpError> {
    let rows = state.control.deployments().list(&me, params.str("userId")).await?;
    Ok(Json(Deployments { models: models(&state, &rows) }))
}

#[utoipa::path(get, path = "/v1/admin/models", tag = "admin",
    params(ForUser, Page),
    responses((status = 200, body = DeploymentsPage)),
)]
pub async fn admin_list(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    params: Params,
) -> Result<Json<DeploymentsPage>, CpError> {
    me.require_admin()?;
    let (page, size) = params.page(50, MAX_ADMIN_PAGE)?;
    let (rows, total) = state.control.deployments().page(&me, params.str("userId"), page, size).await?;
    Ok(Json(DeploymentsPage { models: models(&state, &rows), page, size, total }))
}

#[utoipa::path(get, path = "/v1/models/{model_id}", tag = "models",
    params(("model_id" = String, Path)),
    responses((status = 200, body = DeploymentReply)),
)]
pub async fn get(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Path(id): Path<String>,
) -> Result<Json<DeploymentReply>, CpError> {
    let row = state.control.deployments().get(&me, &id).await?;
    Ok(Json(DeploymentReply { model: model(&row, &served(&state)) }))
}

#[utoipa::path(delete, path = "/v1/models/{model_id}", tag = "models",
    params(("model_id" = String, Path)),
    responses((status = 200, body = Empty)),
)]
pub async fn delete(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Path(id): Path<String>,
) -> Result<Json<Empty>, CpError> {
    state.control.deployments().delete(&me, &id).await?;
    Ok(Json(Empty::default()))
}

#[utoipa::path(delete, path = "/v1/admin/models/{model_id}", tag = "admin",
    params(("model_id" = String, Path)),
    responses((status = 200, body = Empty)),
)]
pub async fn admin_delete(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Path(id): Path<String>,
) -> Result<Json<Empty>, CpError> {
    me.require_admin()?;
    delete(State(state), SignedIn(me), Path(id)).await
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deploy {
    user_id: Option<String>,
    #[serde(default)]
    model_name: String,
    model_path: Option<String>,
    description: Option<String>,
    model_spec: Option<Map<String, Value>>,
    infra: Option<Map<String, Value>>,
    gpu_count: Option<i64>,
    gpu_type: Option<String>,
}

#[utoipa::path(post, path = "/v1/models", tag = "models",
    request_body = Deploy,
    responses((status = 200, body = DeploymentReply)),
)]
pub async fn deploy(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Body(d): Body<Deploy>,
) -> Result<Json<DeploymentReply>, CpError> {
    let new = NewDeployment {
        user_id: d.user_id,
        model_name: d.model_name,
        model_path: d.model_path,
        description: d.description,
        model_spec: d.model_spec,
        infra: d.infra,
        gpu_count: d.gpu_count,
        gpu_type: d.gpu_type,
    };
    let served = served(&state);
    let row = state.control.deployments().create(&me, new, &served.ids).await?;
    Ok(Json(DeploymentReply { model: model(&row, &served) }))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Validate {
    user_id: Option<String>,
    #[serde(default)]
    model_name: String,
}

#[utoipa::path(post, path = "/v1/models:validate", tag = "models",
    request_body = Validate,
    responses((status = 200, body = Validity)),
)]
pub async fn validate(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Body(v): Body<Validate>,
) -> Result<Json<Validity>, CpError> {
    let free = state.control.deployments().name_free(&me, v.user_id.as_deref(), &v.model_name).await?;
    Ok(Json(Validity { is_valid: free }))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchByInfra {
    user_id: Option<String>,
    infra: Option<Map<String, Value>>,
}

/// The caller's deployments whose `infra` has every field the query gives, equal.
#[utoipa::path(post, path = "/v1/models:search-by-infra", tag = "models",
    request_body = SearchByInfra,
    responses((status = 200, body = Deployments)),
)]
pub async fn search_by_infra(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Body(q): Body<SearchByInfra>,
) -> Result<Json<Deployments>, CpError> {
    let wanted = q.infra.ok_or_else(|| CpError::invalid("infra", "is required"))?;
    let rows = state.control.deployments().list(&me, q.user_id.as_deref()).await?;
    let matching: Vec<_> = rows.into_iter().filter(|d| wanted.iter().all(|(k, v)| d.infra.get(k) == Some(v))).collect();
    Ok(Json(Deployments { models: models(&state, &matching) }))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    #[serde(default)]
    model_id: String,
}

/// What serving the deployment's model takes: weights plus a full context of KV cache, and
/// the KV cache alone (what an offloading cache such as LMCache holds), in GiB.
#[utoipa::path(post, path = "/v1/models/check", tag = "models",
    request_body = Check,
    responses((status = 200, body = MemoryCheck)),
)]
pub async fn check(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Body(c): Body<Check>,
) -> Result<Json<MemoryCheck>, CpError> {
    if c.model_id.trim().is_empty() {
        return Err(CpError::invalid("modelId", "is required"));
    }
    let row = state.control.deployments().get(&me, &c.model_id).await?;
    let serving = serving(&state)?;
    let info = serving.backend.models().into_iter().find(|m| m.id == row.model_path);
    let Some((memory, context)) = info.and_then(|m| m.memory.map(|mem| (mem, m.max_context))) else {
        return Err(CpError(ControlError::Unimplemented(format!(
            "the backend serving {} does not report its memory needs",
            row.model_path
        ))));
    };
    let kv = memory.kv_bytes_per_token.saturating_mul(context) as f64;
    Ok(Json(MemoryCheck {
        required_gpu_memory_gib: round3((memory.weights_bytes as f64 + kv) / GIB),
        required_lm_cache_memory_gib: round3(kv / GIB),
    }))
}

#[derive(Deserialize, ToSchema)]
pub struct ChatBody {
    body: Option<String>,
}

/// `POST /v1/models/{id}:chat`: the id and the custom verb share the last segment.
#[utoipa::path(post, path = "/v1/models/{model_id}", tag = "models",
    params(("model_id" = String, Path, description = "The deployment id followed by the verb: `{id}:chat`")),
    request_body = ChatBody,
    responses(
        (status = 200, description = "The model's answer to one message (`POST /v1/models/{id}:chat`), billed like an inference request.", body = ChatReply),
    ),
)]
pub async fn post_verb(
    State(state): State<ControlState>,
    SignedIn(me): SignedIn,
    Path(segment): Path<String>,
    Body(b): Body<ChatBody>,
) -> Result<Json<ChatReply>, CpError> {
    let Some(id) = segment.strip_suffix(":chat") else {
        return Err(CpError(ControlError::NotFound(format!("no route for POST /v1/models/{segment}"))));
    };
    let message = b.body.filter(|m| !m.trim().is_empty()).ok_or_else(|| CpError::invalid("body", "is required"))?;
    if message.chars().count() > MAX_CHAT_CHARS {
        return Err(CpError::invalid("body", format!("is longer than {MAX_CHAT_CHARS} characters")));
    }
    let row = state.control.deployments().get(&me, id).await?;
    if row.deleted_at.is_some() {
        return Err(CpError(ControlError::FailedPrecondition(format!("model {id} is deleted"))));
    }
    let serving = serving(&state)?;
    let text = serving.gateway.one_shot_chat(me, row.model_path, message).await.map_err(chat_error)?;
    Ok(Json(ChatReply { response: text }))
}

/// A one-shot chat's refusal or failure, as the Control Plane answers it: what the
/// inference API answers with 429 or 503 keeps its `Retry-After`, what the caller can fix
/// is a failed precondition, and an internal failure says no more than that (the detail
/// goes to the log).
fn chat_error(e: GatewayError) -> CpError {
    CpError(e.into_control())
}

fn serving(state: &ControlState) -> Result<&crate::inference::AppState, CpError> {
    state.serving.as_ref().ok_or_else(|| {
        CpError(ControlError::Unavailable { message: "this server runs no inference".into(), retry_after_secs: 60 })
    })
}

/// The served models and which of them can take work now (for a fleet: at least one
/// endpoint passes its checks), read once per request.
struct Served {
    ids: Vec<String>,
    up: Vec<String>,
}

fn served(state: &ControlState) -> Served {
    match &state.serving {
        Some(s) => {
            let ids: Vec<String> = s.backend.models().into_iter().map(|m| m.id).collect();
            let up = ids.iter().filter(|id| s.backend.model_healthy(id)).cloned().collect();
            Served { ids, up }
        }
        None => Served { ids: Vec::new(), up: Vec::new() },
    }
}

fn models(state: &ControlState, rows: &[tm_control::deployments::Deployment]) -> Vec<Deployment> {
    let served = served(state);
    rows.iter().map(|r| model(r, &served)).collect()
}

fn model(d: &tm_control::deployments::Deployment, served: &Served) -> Deployment {
    let status = if d.deleted_at.is_some() {
        ModelStatus::Deleted
    } else if served.up.contains(&d.model_path) {
        ModelStatus::Up
    } else {
        ModelStatus::Down
    };
    Deployment {
        model_id: d.id.clone(),
        deployment_id: d.id.clone(),
        user_id: d.user_id.clone(),
        description: d.description.clone(),
        model_path: d.model_path.clone(),
        model_name: d.model_name.clone(),
        status,
        events: Vec::new(),
        created_at: d.created_at,
        updated_at: d.updated_at,
        model_spec: Value::Object(d.model_spec.clone()),
        infra: Value::Object(d.infra.clone()),
        gpu_count: d.gpu_count,
        gpu_type: d.gpu_type.clone(),
        replicas: 1,
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
