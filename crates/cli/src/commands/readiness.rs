//! Local readiness of the Control Plane token and the gateway credentials, as `tm auth
//! status`, `tm doctor` and `tm init` report it (docs/contracts.md §K1). No network.

use serde_json::{json, Value};

use crate::files;
use crate::settings::{redact, Settings};

pub struct Readiness {
    pub auth_json_path: String,
    pub auth_json_exists: bool,
    pub token_present: bool,
    /// Why `auth.json` could not be read.
    pub token_error: Option<String>,
    pub api_key_present: bool,
    pub user_id: Option<String>,
    pub user_valid: bool,
    pub user_error: Option<String>,
    /// No user id configured, but a usable Control Plane token to derive it from.
    pub user_derived: bool,
    pub model_present: bool,
}

impl Readiness {
    pub fn inspect(s: &Settings) -> Readiness {
        let path = files::auth_path();
        let (token_present, token_error) = match files::read_auth() {
            Ok(Some(a)) => (a.get("access_token").and_then(Value::as_str).is_some_and(|t| !t.trim().is_empty()), None),
            Ok(None) => (false, None),
            Err(e) => (false, Some(e.message().to_owned())),
        };
        let user_id = s.gateway_user_id.value.as_deref().map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned);
        let user_valid = user_id.as_deref().is_some_and(|u| uuid::Uuid::parse_str(u).is_ok());
        let user_error = (user_id.is_some() && !user_valid)
            .then(|| "Invalid gateway user id. `X-User-Id` must be a UUID.".to_owned());
        let filled = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.trim().is_empty());
        Readiness {
            auth_json_path: path.display().to_string(),
            auth_json_exists: path.exists(),
            user_derived: user_id.is_none() && token_present && token_error.is_none(),
            token_present,
            token_error,
            api_key_present: filled(&s.gateway_api_key.value),
            user_id,
            user_valid,
            user_error,
            model_present: filled(&s.gateway_model_id.value),
        }
    }

    pub fn control_plane_ready(&self) -> bool {
        self.token_present && self.token_error.is_none()
    }

    pub fn user_ready(&self) -> bool {
        self.user_valid || self.user_derived
    }

    pub fn gateway_ready(&self) -> bool {
        self.api_key_present && self.user_ready()
    }

    pub fn overall_ready(&self) -> bool {
        self.control_plane_ready() && self.gateway_ready()
    }

    pub fn ready_for_direct_request(&self) -> bool {
        self.gateway_ready() && self.model_present
    }

    /// The token-file error, and (when asked) the invalid user id.
    pub fn common_warnings(&self, with_user_error: bool) -> Vec<String> {
        let mut out: Vec<String> =
            self.token_error.iter().map(|e| format!("control_plane_auth_json invalid ({e})")).collect();
        if with_user_error {
            out.extend(self.user_error.clone());
        }
        out
    }

    pub fn control_plane_data(&self, s: &Settings) -> Value {
        json!({
            "base": s.controlplane_base.value,
            "auth_json_path": self.auth_json_path,
            "auth_json_exists": self.auth_json_exists,
            "access_token_present": self.token_present,
            "auth_json_source": "built-in:controlplane_auth_json",
            "error": self.token_error,
        })
    }

    pub fn gateway_data(&self, s: &Settings) -> Value {
        let user_source = s
            .gateway_user_id
            .source
            .clone()
            .or_else(|| self.user_derived.then(|| "derived-from:controlplane-auth".to_owned()));
        json!({
            "provider": s.gateway_provider.value,
            "base": s.gateway_base.value,
            "base_source": s.gateway_base.source,
            "api_key_present": self.api_key_present,
            "api_key_source": s.gateway_api_key.source,
            "api_key_value": s.gateway_api_key.value.as_deref().map(redact),
            "user_id_present": self.user_id.is_some(),
            "user_id_value": self.user_id,
            "user_id_valid": self.user_valid,
            "user_id_ready": self.user_ready(),
            "user_id_derived_from_controlplane": self.user_derived,
            "user_id_error": self.user_error,
            "user_id_source": user_source,
            "model_id_present": self.model_present,
            "model_id_source": s.gateway_model_id.source,
            "model_id_value": s.gateway_model_id.value,
        })
    }

    /// `Control Plane: base=… token=…`, with the token file's path and source when asked.
    pub fn control_plane_line(&self, s: &Settings, with_file: bool) -> String {
        let mut line = format!(
            "Control Plane: base={} token={}",
            s.controlplane_base.value.as_deref().unwrap_or_default(),
            present(self.token_present)
        );
        if with_file {
            line += &format!(" auth_json={} source=built-in:controlplane_auth_json", self.auth_json_path);
        }
        line
    }

    pub fn gateway_line(&self, s: &Settings) -> String {
        let user = if self.user_valid {
            "present"
        } else if self.user_derived {
            "derived"
        } else {
            "missing"
        };
        format!(
            "Gateway: provider={} base={} api_key={} user_id={user} model_id={}",
            s.gateway_provider.value.as_deref().unwrap_or_default(),
            s.gateway_base.value.as_deref().unwrap_or_default(),
            present(self.api_key_present),
            present(self.model_present)
        )
    }
}

fn present(p: bool) -> &'static str {
    if p {
        "present"
    } else {
        "missing"
    }
}
