//! The catalog: objects by id and by name, dependency edges, persistence.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::CatalogError;
use crate::object::{CatalogObject, Column, ObjectId, ObjectKind};
use crate::persist;
use crate::role::{PUBLIC, Role, RoleChange};

/// What a caller supplies to create an object; the catalog assigns the id and time.
#[derive(Debug, Clone)]
pub struct NewObject {
    pub kind: ObjectKind,
    pub schema: String,
    pub name: String,
    pub owner: String,
    pub definition: String,
    pub columns: Vec<Column>,
    pub primary_key: Vec<String>,
    pub depends_on: Vec<ObjectId>,
}

/// The persisted document.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct CatalogState {
    /// Incremented by every change; checkpoints (later) record the version they cover.
    version: u64,
    next_id: ObjectId,
    objects: BTreeMap<ObjectId, CatalogObject>,
    /// By name. Absent from catalogs written before roles existed.
    #[serde(default)]
    roles: BTreeMap<String, Role>,
    /// Per relation, the roles granted `SELECT` on it (besides its owner and superusers).
    #[serde(default)]
    select_grants: BTreeMap<ObjectId, BTreeSet<String>>,
}

/// Rewrites definitions on their way to and from the catalog file: the server seals the
/// secrets in them (connector passwords), so the file never holds them in clear while the
/// catalog in memory does (every definition is re-planned from it).
pub trait DefinitionCodec: Send + Sync + std::fmt::Debug {
    /// The definition as stored.
    fn seal(&self, definition: &str) -> Result<String, CatalogError>;
    /// The definition as read back.
    fn unseal(&self, stored: &str) -> Result<String, CatalogError>;
}

/// The catalog of one database. Not synchronized: the server keeps it behind a lock and
/// changes it only from DDL, one statement at a time.
#[derive(Debug)]
pub struct Catalog {
    /// Where the catalog persists; `None` for an in-memory catalog (unit tests).
    dir: Option<PathBuf>,
    state: CatalogState,
    codec: Option<std::sync::Arc<dyn DefinitionCodec>>,
}

/// Ids of user objects start here so that they never collide with the OIDs of Postgres's
/// built-in catalog objects (below 16384 in Postgres too).
const FIRST_OBJECT_ID: ObjectId = 16384;

impl Catalog {
    /// Opens (or creates) the catalog persisted in `dir`.
    pub fn open(dir: &Path) -> Result<Self, CatalogError> {
        std::fs::create_dir_all(dir)?;
        let state = persist::load::<CatalogState>(dir)?
            .unwrap_or_else(CatalogState::empty);
        Ok(Catalog { dir: Some(dir.to_path_buf()), state, codec: None })
    }

    /// [`Catalog::open`], with definitions passed through `codec` to and from the file. A
    /// catalog written before (or without) the codec is read as it is, and sealed at its next
    /// change.
    pub fn open_with_codec(dir: &Path, codec: std::sync::Arc<dyn DefinitionCodec>) -> Result<Self, CatalogError> {
        let mut catalog = Catalog::open(dir)?;
        for object in catalog.state.objects.values_mut() {
            object.definition = codec.unseal(&object.definition)?;
        }
        catalog.codec = Some(codec);
        Ok(catalog)
    }

    /// A catalog that lives only in memory.
    pub fn in_memory() -> Self {
        Catalog {
            dir: None,
            state: CatalogState::empty(),
            codec: None,
        }
    }

    pub fn version(&self) -> u64 {
        self.state.version
    }

    pub fn get(&self, id: ObjectId) -> Option<&CatalogObject> {
        self.state.objects.get(&id)
    }

    /// Every object, in id (creation) order.
    pub fn objects(&self) -> impl Iterator<Item = &CatalogObject> {
        self.state.objects.values()
    }

    pub fn objects_of_kind(&self, kind: ObjectKind) -> impl Iterator<Item = &CatalogObject> {
        self.objects().filter(move |o| o.kind == kind)
    }

    /// Looks a name up in the namespace of `kind`: relations share one namespace.
    pub fn find(&self, kind: ObjectKind, schema: &str, name: &str) -> Option<&CatalogObject> {
        self.objects().find(|o| {
            o.schema == schema && o.name == name && same_namespace(o.kind, kind)
        })
    }

    /// Like [`Catalog::find`], but the object must be of exactly `kind`.
    pub fn find_kind(
        &self,
        kind: ObjectKind,
        schema: &str,
        name: &str,
    ) -> Result<&CatalogObject, CatalogError> {
        match self.find(kind, schema, name) {
            Some(o) if o.kind == kind => Ok(o),
            Some(o) => Err(CatalogError::WrongKind { name: name.to_string(), expected: kind, actual: o.kind }),
            None => Err(CatalogError::NotFound { kind, name: name.to_string() }),
        }
    }

    /// Adds an object and persists the catalog before returning.
    pub fn create(&mut self, new: NewObject) -> Result<CatalogObject, CatalogError> {
        if let Some(existing) = self.find(new.kind, &new.schema, &new.name) {
            return Err(CatalogError::AlreadyExists { existing: existing.kind, name: new.name });
        }
        if let Some(missing) = new.depends_on.iter().find(|d| !self.state.objects.contains_key(d)) {
            return Err(CatalogError::MissingDependency(*missing));
        }
        let id = self.state.next_id;
        let object = CatalogObject {
            id,
            kind: new.kind,
            schema: new.schema,
            name: new.name,
            owner: new.owner,
            definition: new.definition,
            columns: new.columns,
            primary_key: new.primary_key,
            depends_on: new.depends_on,
            created_at_micros: now_micros(),
        };
        let mut next = self.state.clone();
        next.next_id += 1;
        next.version += 1;
        next.objects.insert(id, object.clone());
        self.commit(next)?;
        Ok(object)
    }

    /// Replaces an object's stored definition (`ALTER ... SET`) and persists the catalog.
    pub fn set_definition(&mut self, id: ObjectId, definition: String) -> Result<CatalogObject, CatalogError> {
        let mut next = self.state.clone();
        let object = next.objects.get_mut(&id).ok_or(CatalogError::MissingDependency(id))?;
        object.definition = definition;
        let object = object.clone();
        next.version += 1;
        self.commit(next)?;
        Ok(object)
    }

    /// Every object that depends on `id`, directly or through others, dependents before the
    /// objects they depend on (the order in which they must be dropped).
    pub fn dependents(&self, id: ObjectId) -> Vec<ObjectId> {
        let mut out = Vec::new();
        self.collect_dependents(id, &mut out);
        out
    }

    fn collect_dependents(&self, id: ObjectId, out: &mut Vec<ObjectId>) {
        for o in self.objects().filter(|o| o.depends_on.contains(&id)) {
            if !out.contains(&o.id) {
                self.collect_dependents(o.id, out);
                out.push(o.id);
            }
        }
    }

    /// Drops `id`, and with `cascade` everything that depends on it; without `cascade`,
    /// dependents make it an error. Returns the dropped objects, dependents first.
    pub fn drop_object(&mut self, id: ObjectId, cascade: bool) -> Result<Vec<CatalogObject>, CatalogError> {
        let object = self
            .get(id)
            .cloned()
            .ok_or(CatalogError::NotFound { kind: ObjectKind::Table, name: id.to_string() })?;
        let dependents = self.dependents(id);
        if !dependents.is_empty() && !cascade {
            let dependents = dependents
                .iter()
                .filter_map(|d| self.get(*d))
                .map(|d| format!("{} {} depends on {} {}", d.kind, d.name, object.kind, object.name))
                .collect();
            return Err(CatalogError::HasDependents { kind: object.kind, name: object.name, dependents });
        }
        let mut next = self.state.clone();
        next.version += 1;
        let mut dropped = Vec::new();
        for d in dependents.iter().chain(std::iter::once(&id)) {
            if let Some(o) = next.objects.remove(d) {
                next.select_grants.remove(d);
                dropped.push(o);
            }
        }
        self.commit(next)?;
        Ok(dropped)
    }

    pub fn role(&self, name: &str) -> Option<&Role> {
        self.state.roles.get(name)
    }

    /// Every role, by name.
    pub fn roles(&self) -> impl Iterator<Item = &Role> {
        self.state.roles.values()
    }

    /// Adds a role and persists the catalog.
    pub fn create_role(&mut self, name: &str, superuser: bool, login: bool, password: Option<String>) -> Result<Role, CatalogError> {
        if name == PUBLIC {
            return Err(CatalogError::ReservedRoleName(name.to_string()));
        }
        if self.state.roles.contains_key(name) {
            return Err(CatalogError::RoleExists(name.to_string()));
        }
        let role = Role { name: name.to_string(), superuser, login, password, created_at_micros: now_micros() };
        let mut next = self.state.clone();
        next.version += 1;
        next.roles.insert(name.to_string(), role.clone());
        self.commit(next)?;
        Ok(role)
    }

    /// Changes a role's properties and persists the catalog.
    pub fn alter_role(&mut self, name: &str, change: RoleChange) -> Result<Role, CatalogError> {
        let mut next = self.state.clone();
        let role = next.roles.get_mut(name).ok_or_else(|| CatalogError::RoleNotFound(name.to_string()))?;
        if let Some(superuser) = change.superuser {
            role.superuser = superuser;
        }
        if let Some(login) = change.login {
            role.login = login;
        }
        if let Some(password) = change.password {
            role.password = password;
        }
        let role = role.clone();
        next.version += 1;
        self.commit(next)?;
        Ok(role)
    }

    /// Drops a role that owns nothing (as Postgres, which asks for `REASSIGN OWNED` /
    /// `DROP OWNED` first), with its grants.
    pub fn drop_role(&mut self, name: &str) -> Result<(), CatalogError> {
        if !self.state.roles.contains_key(name) {
            return Err(CatalogError::RoleNotFound(name.to_string()));
        }
        let owned: Vec<String> = self.objects().filter(|o| o.owner == name).map(|o| format!("owner of {} {}", o.kind, o.qualified_name())).collect();
        if !owned.is_empty() {
            return Err(CatalogError::RoleOwnsObjects { name: name.to_string(), owned });
        }
        let mut next = self.state.clone();
        next.version += 1;
        next.roles.remove(name);
        for grantees in next.select_grants.values_mut() {
            grantees.remove(name);
        }
        self.commit(next)?;
        Ok(())
    }

    /// Grants (`grant`) or revokes `SELECT` on relation `id` to role `role`.
    pub fn set_select_grant(&mut self, id: ObjectId, role: &str, grant: bool) -> Result<(), CatalogError> {
        if role != PUBLIC && !self.state.roles.contains_key(role) {
            return Err(CatalogError::RoleNotFound(role.to_string()));
        }
        let mut next = self.state.clone();
        next.version += 1;
        let grantees = next.select_grants.entry(id).or_default();
        if grant {
            grantees.insert(role.to_string());
        } else {
            grantees.remove(role);
        }
        self.commit(next)?;
        Ok(())
    }

    /// The roles granted `SELECT` on relation `id` (not counting its owner and superusers);
    /// [`PUBLIC`] for a grant to every role.
    pub fn select_grantees(&self, id: ObjectId) -> impl Iterator<Item = &str> {
        self.state.select_grants.get(&id).into_iter().flatten().map(String::as_str)
    }

    /// Whether `role` was granted `SELECT` on relation `id`, itself or through `PUBLIC`.
    pub fn has_select_grant(&self, id: ObjectId, role: &str) -> bool {
        self.select_grantees(id).any(|g| g == role || g == PUBLIC)
    }

    /// Persists `next` and only then makes it current, so a failed write changes nothing.
    fn commit(&mut self, next: CatalogState) -> Result<(), CatalogError> {
        if let Some(dir) = &self.dir {
            match &self.codec {
                Some(codec) => {
                    let mut stored = next.clone();
                    for object in stored.objects.values_mut() {
                        object.definition = codec.seal(&object.definition)?;
                    }
                    persist::store(dir, &stored)?;
                }
                None => persist::store(dir, &next)?,
            }
        }
        self.state = next;
        Ok(())
    }
}

impl CatalogState {
    fn empty() -> Self {
        CatalogState {
            version: 0,
            next_id: FIRST_OBJECT_ID,
            objects: BTreeMap::new(),
            roles: BTreeMap::new(),
            select_grants: BTreeMap::new(),
        }
    }
}

fn same_namespace(a: ObjectKind, b: ObjectKind) -> bool {
    a == b || (a.is_relation() && b.is_relation())
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(kind: ObjectKind, name: &str, deps: Vec<ObjectId>) -> NewObject {
        NewObject {
            kind,
            schema: "public".into(),
            name: name.into(),
            owner: "weir".into(),
            definition: format!("CREATE ... {name}"),
            columns: vec![],
            primary_key: vec![],
            depends_on: deps,
        }
    }

    #[test]
    fn relations_share_a_namespace() {
        let mut c = Catalog::in_memory();
        c.create(new(ObjectKind::Table, "t", vec![])).unwrap();
        let err = c.create(new(ObjectKind::MaterializedView, "t", vec![])).unwrap_err();
        assert_eq!(err.to_string(), "relation \"t\" already exists");
        // Sinks have their own namespace.
        c.create(new(ObjectKind::Sink, "t", vec![])).unwrap();
    }

    #[test]
    fn drop_respects_dependencies() {
        let mut c = Catalog::in_memory();
        let t = c.create(new(ObjectKind::Table, "t", vec![])).unwrap();
        let v = c.create(new(ObjectKind::MaterializedView, "v", vec![t.id])).unwrap();
        let s = c.create(new(ObjectKind::Sink, "s", vec![v.id])).unwrap();
        assert!(matches!(c.drop_object(t.id, false), Err(CatalogError::HasDependents { .. })));
        let dropped: Vec<_> = c.drop_object(t.id, true).unwrap().iter().map(|o| o.id).collect();
        assert_eq!(dropped, vec![s.id, v.id, t.id]);
        assert_eq!(c.objects().count(), 0);
    }

    #[test]
    fn roles_own_objects_and_hold_grants() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(dir.path()).unwrap();
        c.create_role("ann", false, true, Some("SCRAM-SHA-256$4096:c2FsdA==$a:b".into())).unwrap();
        assert!(matches!(c.create_role("ann", false, true, None), Err(CatalogError::RoleExists(_))));
        let mut table = new(ObjectKind::Table, "t", vec![]);
        table.owner = "ann".into();
        let t = c.create(table).unwrap();
        c.create_role("bob", false, true, None).unwrap();
        c.set_select_grant(t.id, "bob", true).unwrap();
        assert_eq!(c.select_grantees(t.id).collect::<Vec<_>>(), ["bob"]);
        let err = c.drop_role("ann").unwrap_err();
        assert_eq!(err.to_string(), "role \"ann\" cannot be dropped because some objects depend on it");
        c.alter_role("bob", RoleChange { password: Some(None), superuser: Some(true), ..RoleChange::default() }).unwrap();
        // Roles and grants survive a restart; dropping a role drops its grants.
        let mut c = Catalog::open(dir.path()).unwrap();
        assert_eq!(c.role("ann").and_then(|r| r.password.clone()).as_deref(), Some("SCRAM-SHA-256$4096:c2FsdA==$a:b"));
        assert!(c.role("bob").is_some_and(|r| r.superuser && r.password.is_none()));
        c.drop_role("bob").unwrap();
        assert_eq!(c.select_grantees(t.id).count(), 0);
        c.drop_object(t.id, false).unwrap();
        c.drop_role("ann").unwrap();
        assert_eq!(c.roles().count(), 0);
    }

    #[test]
    fn survives_reopen_and_never_reuses_ids() {
        let dir = tempfile::tempdir().unwrap();
        let first = {
            let mut c = Catalog::open(dir.path()).unwrap();
            let t = c.create(new(ObjectKind::Table, "t", vec![])).unwrap();
            c.drop_object(t.id, false).unwrap();
            c.create(new(ObjectKind::Table, "u", vec![])).unwrap()
        };
        let mut c = Catalog::open(dir.path()).unwrap();
        assert_eq!(c.find(ObjectKind::Table, "public", "u"), Some(&first));
        let next = c.create(new(ObjectKind::Table, "w", vec![])).unwrap();
        assert!(next.id > first.id);
    }
}
