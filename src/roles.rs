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
    superuser_in(&db.read_catalog(), user, db.config.auth_method() == AuthMethod::Trust).unwrap_or(false)
}

/// [`is_superuser`] against `catalog`: None for a name that is no role when not under `trust`.
pub fn superuser_in(catalog: &weir_catalog::Catalog, user: &str, trust: bool) -> Option<bool> {
    match catalog.role(user) {
        Some(role) => Some(role.superuser),
        None => trust.then_some(true),
    }
}

/// The verifier `user`'s password is checked against: `None` for an unknown role, one that
/// may not log in, or one without a password (none of which may log in with a password).
pub fn login_verifier(db: &Database, user: &str) -> Option<crate::auth::scram::Verifier> {
    db.read_catalog()
        .role(user)
        .filter(|r| r.login)
        .and_then(|r| r.password.as_deref().and_then(crate::auth::scram::Verifier::parse))
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

/// The role a statement runs as, installed as a `SessionConfig` extension by the session, so
/// that planning code reached from it (views, sinks, SUBSCRIBE) checks the same privileges.
#[derive(Debug)]
pub struct StatementUser(pub String);

/// Whether `user` may read `object`: it is a superuser, the owner, or was granted `SELECT`.
pub fn may_read(catalog: &weir_catalog::Catalog, superuser: bool, user: &str, object: &weir_catalog::CatalogObject) -> bool {
    superuser || object.owner == user || catalog.has_select_grant(object.id, user)
}

fn permission_denied(object: &weir_catalog::CatalogObject) -> WeirError {
    WeirError::new(SqlState::InsufficientPrivilege, format!("permission denied for {} {}", object.kind, object.name))
}

/// Refuses (42501) reading any of these relations when `user` may not.
pub fn check_reads(db: &Database, user: &str, ids: impl IntoIterator<Item = weir_catalog::ObjectId>) -> Result<()> {
    let superuser = is_superuser(db, user);
    let catalog = db.read_catalog();
    for id in ids {
        if let Some(object) = catalog.get(id)
            && !may_read(&catalog, superuser, user, object)
        {
            return Err(permission_denied(object));
        }
    }
    Ok(())
}

/// [`check_reads`] for the user of a statement's context; a context without one (the server
/// re-planning its own catalog at start) reads everything.
pub fn check_context_reads(db: &Database, ctx: &datafusion::prelude::SessionContext, ids: impl IntoIterator<Item = weir_catalog::ObjectId>) -> Result<()> {
    match ctx.state().config().get_extension::<StatementUser>() {
        Some(user) => check_reads(db, &user.0, ids),
        None => Ok(()),
    }
}

/// Refuses (42501) a planned statement that reads a relation `user` may not read, or writes
/// a table `user` does not own (there are no INSERT/UPDATE/DELETE grants yet).
pub fn check_plan(db: &Database, user: &str, plan: &datafusion::logical_expr::LogicalPlan) -> Result<()> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::logical_expr::LogicalPlan;
    let superuser = is_superuser(db, user);
    if superuser {
        return Ok(());
    }
    let catalog = db.read_catalog();
    let relation = |name: &datafusion::common::TableReference| {
        let user_schema = name.schema().is_none_or(|s| s == crate::database::DEFAULT_SCHEMA);
        let our_catalog = name.catalog().is_none_or(|c| c == crate::database::DATABASE_NAME);
        (user_schema && our_catalog).then(|| catalog.find(weir_catalog::ObjectKind::Table, crate::database::DEFAULT_SCHEMA, name.table())).flatten()
    };
    let mut denied = None;
    plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::TableScan(scan) => {
                if let Some(object) = relation(&scan.table_name)
                    && !may_read(&catalog, superuser, user, object)
                {
                    denied = Some(permission_denied(object));
                }
            }
            LogicalPlan::Dml(dml) => {
                if let Some(object) = relation(&dml.table_name)
                    && object.owner != user
                {
                    denied = Some(permission_denied(object).with_detail("Only the table's owner (or a superuser) may change its rows."));
                }
            }
            _ => {}
        }
        Ok(if denied.is_some() { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    })?;
    denied.map_or(Ok(()), Err)
}

/// Refuses (42501) DDL on `object` by anyone but its owner or a superuser.
pub fn check_owner(db: &Database, user: &str, object: &weir_catalog::CatalogObject) -> Result<()> {
    if object.owner == user || is_superuser(db, user) {
        Ok(())
    } else {
        Err(WeirError::new(SqlState::InsufficientPrivilege, format!("must be owner of {} {}", object.kind, object.name)))
    }
}

/// `GRANT SELECT ON t, ... TO role, ...` and `REVOKE SELECT ON t, ... FROM role, ...`, by the
/// relations' owner or a superuser.
pub async fn grant(db: &Database, user: &str, statement: &weir_sql::sqlparser::ast::Statement) -> Result<()> {
    use weir_sql::sqlparser::ast::{Action, GrantObjects, GranteeName, GranteesType, Privileges, Statement as S};
    let (privileges, objects, grantees, granting) = match statement {
        S::Grant(g) => (&g.privileges, &g.objects, &g.grantees, true),
        S::Revoke(r) => (&r.privileges, &r.objects, &r.grantees, false),
        _ => return Err(WeirError::internal("not a GRANT or REVOKE")),
    };
    let select_only = match privileges {
        Privileges::All { .. } => true,
        Privileges::Actions(actions) => actions.iter().all(|a| matches!(a, Action::Select { columns: None })),
    };
    if !select_only {
        return Err(WeirError::not_supported("privileges other than SELECT (on whole relations)"));
    }
    let names = match objects {
        Some(GrantObjects::Tables(names) | GrantObjects::Views(names)) => names,
        _ => return Err(WeirError::not_supported("GRANT on anything but tables and views (materialized views and sources are named as tables)")),
    };
    let mut roles = Vec::new();
    for grantee in grantees {
        match (&grantee.grantee_type, &grantee.name) {
            (GranteesType::Public, _) => roles.push(weir_catalog::PUBLIC.to_string()),
            (_, Some(GranteeName::ObjectName(name))) => roles.push(name.to_string()),
            _ => return Err(WeirError::not_supported(format!("the grantee {grantee}"))),
        }
    }
    let _ddl = db.ddl_lock.lock().await;
    for name in names {
        let (schema, relation) = crate::session::object_name(name)?;
        let object = db
            .read_catalog()
            .find(weir_catalog::ObjectKind::Table, &schema, &relation)
            .cloned()
            .ok_or_else(|| WeirError::new(SqlState::UndefinedTable, format!("relation \"{relation}\" does not exist")))?;
        check_owner(db, user, &object)?;
        for role in &roles {
            db.write_catalog().set_select_grant(object.id, role, granting)?;
        }
    }
    Ok(())
}
