//! The query parameters several routes share, as the OpenAPI document describes them.
//! Handlers read them through [`super::extract::Params`] (leniently: `True`, `60.0`), so
//! these structs are descriptions only and are never built.
#![allow(dead_code)]

use utoipa::IntoParams;

/// Whose data: the caller's, unless an admin names another user.
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct ForUser {
    /// Another user's id (admins only); the caller when absent.
    user_id: Option<String>,
}

/// A page of a list: `page` counts from 1.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    #[param(minimum = 1)]
    page: Option<i64>,
    #[param(minimum = 1)]
    size: Option<i64>,
}

/// A yes/no flag, read leniently (`true`, `True`, `1`, `false`, `0`; empty means unset).
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct IncludeDeleted {
    /// Deleted keys too.
    #[param(value_type = Option<String>, pattern = r"^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|[01])?$")]
    include_deleted: Option<bool>,
}

/// Only the active prices (same reading as [`IncludeDeleted`]).
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct ActiveOnly {
    #[param(value_type = Option<String>, pattern = r"^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|[01])?$")]
    active_only: Option<bool>,
}

/// A time window. (No `date-time` format in the schema: an empty value means unset, as a
/// query parameter the clients send blank.)
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct TimeRange {
    /// An RFC 3339 time, or empty.
    start_time: Option<String>,
    /// An RFC 3339 time, or empty.
    end_time: Option<String>,
}
