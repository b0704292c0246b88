//! Rewrites that let DataFusion run what Postgres clients send.
//!
//! datafusion-postgres's compatibility parser handles many client queries; these rewrites cover
//! the rest Weir's clients need. Each one is an equivalence under Weir's data model, named
//! with the client that needs it, and applied to every query (`session.rs`), so a user query of
//! the same shape gets the same treatment:
//!
//! * [`rewrite_client_sql`]: whole known client queries, on the text (pgJDBC `getPrimaryKeys`,
//!   Grafana's schema picker).
//! * [`aggregate_scalar_subqueries`]: scalar subqueries Postgres accepts and DataFusion cannot
//!   plan (non-aggregated correlated subqueries, subqueries inside CASE, subqueries over catalog
//!   tables Weir keeps empty).
//! * [`rewrite_generate_subscripts`], [`rewrite_text_casts`]: functions and casts with
//!   Postgres semantics.

use crate::settings::Settings;

/// Parses an expression written as text (the rewrites build them with `format!`).
fn parse_expr(text: &str) -> Option<sqlparser::ast::Expr> {
    sqlparser::parser::Parser::new(&sqlparser::dialect::PostgreSqlDialect {})
        .try_with_sql(text)
        .and_then(|mut p| p.parse_expr())
        .ok()
}

/// Aggregate functions whose result a scalar subquery may return as is.
const AGGREGATES: &[&str] = &[
    "count", "sum", "min", "max", "avg", "first_value", "last_value", "array_agg", "string_agg", "bool_and",
    "bool_or", "every", "json_agg", "jsonb_agg",
];

/// DataFusion plans a correlated scalar subquery only when it aggregates ("Correlated scalar
/// subquery must be aggregated"); Postgres accepts any subquery that returns at most one row,
/// and catalog queries (SQLAlchemy's reflection) rely on that. Wrap the single output of such
/// subqueries in `first_value(...)`: equal for the zero- and one-row cases Postgres allows.
pub fn aggregate_scalar_subqueries(stmt: &mut sqlparser::ast::Statement) {
    use std::ops::ControlFlow;

    use sqlparser::ast::{Expr, SelectItem, SetExpr};
    // Weir has no column defaults and no sequences: a scalar subquery over only those
    // catalog tables is NULL, whatever its correlation (SQLAlchemy's column reflection).
    let _ = sqlparser::ast::visit_expressions_mut(stmt, |e| {
        if let Expr::Subquery(q) = e
            && let SetExpr::Select(select) = q.body.as_ref()
            && !select.from.is_empty()
            && select.from.iter().all(|t| {
                t.joins.is_empty()
                    && matches!(&t.relation, sqlparser::ast::TableFactor::Table { name, .. }
                        if name.0.last().is_some_and(|p| {
                            let p = p.to_string().to_lowercase();
                            p == "pg_attrdef" || p == "pg_sequence"
                        }))
            })
        {
            *e = Expr::Value(sqlparser::ast::Value::Null.into());
        }
        ControlFlow::<()>::Continue(())
    });
    // Every Weir column has its type's default collation (there is no COLLATE clause), so a
    // CASE that looks up a column's collation only when it differs from the type's is NULL.
    let _ = sqlparser::ast::visit_expressions_mut(stmt, |e| {
        if let Expr::Case { conditions, .. } = e
            && conditions.len() == 1
            && matches!(conditions[0].result, Expr::Subquery(_))
            && conditions[0].condition.to_string().contains("attcollation")
        {
            *e = Expr::Value(sqlparser::ast::Value::Null.into());
        }
        ControlFlow::<()>::Continue(())
    });
    // DataFusion cannot run a subquery inside CASE. `CASE WHEN c THEN (SELECT x FROM t WHERE w)
    // [ELSE NULL] END` is `(SELECT x FROM t WHERE (w) AND (c))`: both are NULL unless c holds.
    let _ = sqlparser::ast::visit_expressions_mut(stmt, |e| {
        if let Expr::Case { operand: None, conditions, else_result, .. } = e
            && conditions.len() == 1
            && else_result.as_deref().is_none_or(|x| matches!(x, Expr::Value(v) if v.value == sqlparser::ast::Value::Null))
            && let Expr::Subquery(q) = &conditions[0].result
            && let SetExpr::Select(select) = q.body.as_ref()
            && select.projection.len() == 1
        {
            let condition = conditions[0].condition.clone();
            let mut q = q.clone();
            if let SetExpr::Select(select) = q.body.as_mut() {
                select.selection = Some(match select.selection.take() {
                    Some(w) => Expr::BinaryOp {
                        left: Box::new(Expr::Nested(Box::new(w))),
                        op: sqlparser::ast::BinaryOperator::And,
                        right: Box::new(Expr::Nested(Box::new(condition))),
                    },
                    None => condition,
                });
            }
            *e = Expr::Subquery(q);
        }
        ControlFlow::<()>::Continue(())
    });
    let _ = sqlparser::ast::visit_expressions_mut(stmt, |e| {
        if let Expr::Subquery(q) = e
            && let SetExpr::Select(select) = q.body.as_mut()
            && select.projection.len() == 1
            && select.having.is_none()
            && matches!(&select.group_by, sqlparser::ast::GroupByExpr::Expressions(v, _) if v.is_empty())
        {
            let inner = match &mut select.projection[0] {
                SelectItem::UnnamedExpr(x) => Some(x),
                SelectItem::ExprWithAlias { expr, .. } => Some(expr),
                _ => None,
            };
            if let Some(inner) = inner {
                let is_aggregate = matches!(inner, Expr::Function(f)
                    if f.name.0.last().is_some_and(|p| AGGREGATES.contains(&p.to_string().to_lowercase().as_str())));
                if !is_aggregate
                    && let Some(parsed) = parse_expr(&format!("first_value({inner})"))
                {
                    *inner = parsed;
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

/// `generate_subscripts(a, 1)` → `unnest(weir_subscripts(a))` (DataFusion has no
/// generate_subscripts; SQLAlchemy's primary-key reflection uses it beside `unnest(indkey)`).
pub fn rewrite_generate_subscripts(stmt: &mut sqlparser::ast::Statement) {
    use std::ops::ControlFlow;

    use sqlparser::ast::Expr;
    let _ = sqlparser::ast::visit_expressions_mut(stmt, |e| {
        if let Expr::Function(f) = e
            && f.name.0.last().is_some_and(|p| p.to_string().eq_ignore_ascii_case("generate_subscripts"))
            && let sqlparser::ast::FunctionArguments::List(list) = &f.args
            && let Some(first) = list.args.first()
            && let Some(parsed) = parse_expr(&format!("unnest(weir_subscripts({first}))"))
        {
            *e = parsed;
        }
        ControlFlow::<()>::Continue(())
    });
}

/// `expr::text` in Postgres prints the value as Postgres prints it (`2026-11-23 10:00:00+00`,
/// `t` → `true`); Arrow's cast prints RFC 3339 and friends. Casts to text of anything but a
/// literal or a parameter become `weir_pg_text(expr)`, registered per statement with the
/// session's time zone (see `pg_compat::register_session_functions`).
pub fn rewrite_text_casts(stmt: &mut sqlparser::ast::Statement) {
    use std::ops::ControlFlow;

    use sqlparser::ast::{DataType as D, Expr};
    let _ = sqlparser::ast::visit_expressions_mut(stmt, |e| {
        if let Expr::Cast { expr, data_type: D::Text | D::Varchar(None) | D::String(None), format: None, .. } = e
            && !matches!(expr.as_ref(), Expr::Value(_))
            && let Some(parsed) = parse_expr(&format!("weir_pg_text({expr})"))
        {
            *e = parsed;
        }
        ControlFlow::<()>::Continue(())
    });
}

/// `(composite).field`, Postgres's access to a field of a composite (STRUCT) value, reaches
/// DataFusion as a dot access by identifier, which it plans only after a plain column name
/// (`s.field`); written as `(s)['field']` it plans for any expression. Unquoted field names fold
/// to lower case, as identifiers do.
pub fn rewrite_field_access<V: sqlparser::ast::VisitMut>(node: &mut V) {
    use std::ops::ControlFlow;

    use sqlparser::ast::{AccessExpr, Expr, Subscript, Value};
    let _ = sqlparser::ast::visit_expressions_mut(node, |e| {
        if let Expr::CompoundFieldAccess { root, access_chain } = e
            && !matches!(root.as_ref(), Expr::Identifier(_))
        {
            for access in access_chain.iter_mut() {
                if let AccessExpr::Dot(Expr::Identifier(field)) = access {
                    let name = match field.quote_style {
                        Some(_) => field.value.clone(),
                        None => field.value.to_lowercase(),
                    };
                    *access = AccessExpr::Subscript(Subscript::Index {
                        index: Expr::Value(Value::SingleQuotedString(name).into()),
                    });
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

/// Rewrites client queries that DataFusion cannot run as written into equivalent ones, the way
/// datafusion-postgres keeps a list of known client queries. Each entry names the client.
pub fn rewrite_client_sql<'a>(sql: &'a str, settings: &Settings, user: &str) -> std::borrow::Cow<'a, str> {
    let mut out = std::borrow::Cow::Borrowed(sql);
    // Grafana's table picker: "is the schema on the search_path", written with array
    // subscripts over generate_series and `user`. The answer depends only on the session, so
    // it becomes a literal list.
    static SEARCH_PATH_IN: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r#"(?is)quote_ident\(table_schema\)\s+IN\s+\(\s*SELECT\s+CASE\s+WHEN\s+trim\(s\[i\]\)\s*=\s*'"\$user"'\s+THEN\s+user\s+ELSE\s+trim\(s\[i\]\)\s+END\s+FROM\s+generate_series\(.*?\)\s+as\s+i\s*,\s*string_to_array\(current_setting\('search_path'\)\s*,\s*','\)\s+s\s*\)"#,
        )
        .ok()
    });
    if let Some(re) = SEARCH_PATH_IN.as_ref()
        && re.is_match(&out)
    {
        let path = settings.get("search_path").unwrap_or_default();
        let schemas: Vec<String> = path
            .split(',')
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| if s == "\"$user\"" { user.to_string() } else { s.trim_matches('"').to_string() })
            .map(|s| format!("'{}'", s.replace('\'', "''")))
            .collect();
        let list = if schemas.is_empty() { "NULL".to_string() } else { schemas.join(", ") };
        let replaced = re.replace_all(&out, format!("quote_ident(table_schema) IN ({list})").as_str()).into_owned();
        out = std::borrow::Cow::Owned(replaced);
    }
    // pgJDBC DatabaseMetaData.getPrimaryKeys: `_pg_expandarray(i.indkey)` in the select list.
    if out.contains("information_schema._pg_expandarray(i.indkey)") {
        let s = out
            .replace("(information_schema._pg_expandarray(i.indkey)).n", "k.n")
            .replace("information_schema._pg_expandarray(i.indkey) AS KEYS,", "")
            .replace(
                "JOIN pg_catalog.pg_class ci ON (ci.oid = i.indexrelid)",
                "JOIN pg_catalog.pg_class ci ON (ci.oid = i.indexrelid) \
                 JOIN weir_index_keys() k ON (k.indexrelid = i.indexrelid AND k.attnum = a.attnum)",
            )
            .replace("result.A_ATTNUM = (result.KEYS).x", "true");
        out = std::borrow::Cow::Owned(s);
    }
    out
}
