//! `CREATE / ALTER / DROP USER` and who counts as a superuser (design: `docs/security.md`).

use weir_catalog::{CatalogError, RoleChange};
use weir_sql::sqlparser::ast::Ident;
use weir_sql::RoleOptions;

use crate::auth::{AuthMethod, password_verifier};
use crate::database::Database;
use crate::error::{Result, SqlState, WeirError};

/// Whether `user` has every right: a superuser role, or (under `trust`) a name that is no role
/// at all, which is how the demo and clients that send any user name keep working.
pub fn is_superuser(db: &Database, user: &str) -> bool {
    match db.read_catalog().role(user) {
        Some(role) => role.superuser,
        None => db.config.auth_method() == AuthMethod::Trust,
    }
}

fn require_superuser(db: &Database, user: &str, what: &str) -> Result<()> {
    if is_superuser(db, user) {
        Ok(())
    } else {
        Err(WeirError::new(SqlState::InsufficientPrivilege, format!("permission denied to {what}"))
            .with_detail("Only superusers may create, alter or drop roles (anyone may change their own password)."))
    }
}

/// The stored form of a password option: a SCRAM verifier, never the password.
fn stored_password(options: &RoleOptions) -> Result<Option<Option<String>>> {
    match &options.password {
        Some(Some(p)) if p.is_empty() => {
            Err(WeirError::new(SqlState::InvalidParameterValue, "empty password").with_hint("Use PASSWORD NULL to remove a password."))
        }
        Some(Some(p)) => Ok(Some(Some(password_verifier(p)?))),
        Some(None) => Ok(Some(None)),
        None => Ok(None),
    }
}

pub async fn create_role(db: &Database, session_user: &str, name: &Ident, user: bool, options: &RoleOptions) -> Result<()> {
    require_superuser(db, session_user, "create role")?;
    let password = stored_password(options)?.flatten();
    let _ddl = db.ddl_lock.lock().await;
    db.write_catalog().create_role(&name.value, options.superuser.unwrap_or(false), options.login.unwrap_or(user), password)?;
    tracing::info!(role = %name.value, by = session_user, "role created");
    Ok(())
}

pub async fn alter_role(db: &Database, session_user: &str, name: &Ident, options: &RoleOptions) -> Result<()> {
    let own_password_only = name.value == session_user && options.superuser.is_none() && options.login.is_none();
    if !own_password_only {
        require_superuser(db, session_user, "alter role")?;
    }
    let change = RoleChange { superuser: options.superuser, login: options.login, password: stored_password(options)? };
    let _ddl = db.ddl_lock.lock().await;
    db.write_catalog().alter_role(&name.value, change)?;
    tracing::info!(role = %name.value, by = session_user, "role altered");
    Ok(())
}

pub async fn drop_roles(db: &Database, session_user: &str, names: &[Ident], if_exists: bool) -> Result<()> {
    require_superuser(db, session_user, "drop role")?;
    let _ddl = db.ddl_lock.lock().await;
    for name in names {
        if name.value == session_user {
            return Err(WeirError::new(SqlState::ObjectInUse, "current user cannot be dropped"));
        }
        if name.value == db.config.superuser {
            return Err(WeirError::new(SqlState::InsufficientPrivilege, format!("cannot drop role \"{}\": it is the configured superuser", name.value)));
        }
        match db.write_catalog().drop_role(&name.value) {
            Err(CatalogError::RoleNotFound(_)) if if_exists => {}
            other => other?,
        }
    }
    Ok(())
}

/// Makes the configured superuser exist, as a superuser that may log in, with the configured
/// password when one is given (so an operator can reset a lost one). Under `password`
/// authentication it must have a password, or nobody could ever log in.
pub fn bootstrap_superuser(catalog: &mut weir_catalog::Catalog, config: &crate::config::Config) -> Result<()> {
    let name = &config.superuser;
    let password = config.superuser_password.as_ref().map(|p| p.0.as_str());
    match catalog.role(name) {
        None => {
            let verifier = password.map(password_verifier).transpose()?;
            catalog.create_role(name, true, true, verifier)?;
        }
        Some(role) => {
            let mut change = RoleChange::default();
            if !role.superuser {
                change.superuser = Some(true);
            }
            if !role.login {
                change.login = Some(true);
            }
            // Verified first: a new salt at every start would change the catalog each time.
            let current = role.password.as_deref().and_then(crate::auth::scram::Verifier::parse);
            if let Some(p) = password
                && !current.is_some_and(|v| v.accepts_password(p))
            {
                change.password = Some(Some(password_verifier(p)?));
            }
            if change != RoleChange::default() {
                catalog.alter_role(name, change)?;
            }
        }
    }
    let has_password = catalog.role(name).is_some_and(|r| r.password.is_some());
    if config.auth_method() == AuthMethod::Password && !has_password {
        return Err(WeirError::new(
            SqlState::InvalidParameterValue,
            format!(
                "password authentication is on, but the superuser \"{name}\" has no password: set WEIR_SUPERUSER_PASSWORD \
                 (or superuser_password in weir.toml), or use --auth trust on loopback addresses only"
            ),
        ));
    }
    Ok(())
}
