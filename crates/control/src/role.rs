/// User roles, named as the proto enum the clients send and print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    User,
    Admin,
    SuperAdmin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "USER_ROLE_USER",
            Role::Admin => "USER_ROLE_ADMIN",
            Role::SuperAdmin => "USER_ROLE_SUPER_ADMIN",
        }
    }

    /// Accepts the enum name, or its short form (`admin`), any case.
    pub fn parse(s: &str) -> Option<Role> {
        let upper = s.trim().to_ascii_uppercase();
        match upper.strip_prefix("USER_ROLE_").unwrap_or(&upper) {
            "USER" => Some(Role::User),
            "ADMIN" => Some(Role::Admin),
            "SUPER_ADMIN" => Some(Role::SuperAdmin),
            _ => None,
        }
    }

    pub fn is_admin(self) -> bool {
        self >= Role::Admin
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Who is calling: the user behind an access token or an API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: String,
    pub role: Role,
}

impl Principal {
    /// The user a request acts on: the caller unless another id is named, which only an
    /// admin may do (API1: object-level authorization in one place).
    pub fn scope(&self, requested: Option<&str>) -> Result<String, crate::ControlError> {
        match requested.map(str::trim).filter(|id| !id.is_empty()) {
            None => Ok(self.user_id.clone()),
            Some(id) if id.eq_ignore_ascii_case(&self.user_id) => Ok(self.user_id.clone()),
            Some(id) if self.role.is_admin() => Ok(id.to_ascii_lowercase()),
            Some(_) => Err(crate::ControlError::PermissionDenied("userId names another user".into())),
        }
    }

    pub fn require_admin(&self) -> Result<(), crate::ControlError> {
        if self.role.is_admin() {
            Ok(())
        } else {
            Err(crate::ControlError::PermissionDenied("this route needs an admin role".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_from_enum_names_and_short_forms() {
        assert_eq!(Role::parse("USER_ROLE_SUPER_ADMIN"), Some(Role::SuperAdmin));
        assert_eq!(Role::parse("admin"), Some(Role::Admin));
        assert_eq!(Role::parse("USER_ROLE_UNSPECIFIED"), None);
        assert!(Role::Admin.is_admin() && !Role::User.is_admin());
    }

    #[test]
    fn only_admins_scope_to_other_users() {
        let user = Principal { user_id: "a".into(), role: Role::User };
        assert_eq!(user.scope(None).ok(), Some("a".into()));
        assert_eq!(user.scope(Some("A")).ok(), Some("a".into()));
        assert!(user.scope(Some("b")).is_err());
        let admin = Principal { user_id: "a".into(), role: Role::Admin };
        assert_eq!(admin.scope(Some("B")).ok(), Some("b".into()));
    }
}
