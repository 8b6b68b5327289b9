//! The tables a SQL query reads, with SQL scoping of CTE names: a `WITH` name hides a table of
//! that name only inside the query that declares it (its main query, its later CTEs, itself when
//! `RECURSIVE`, and everything nested in them).
//!
//! sqlparser's derived [`Visitor`] reaches every nested query (FROM, WHERE/EXISTS/IN, scalar
//! subqueries, set operations, function arguments); its pre/post query hooks keep a stack of
//! `WITH` scopes. DataFusion's `resolve_table_references` scopes CTEs the same way but drops the
//! source spans that error messages need.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Ident, ObjectNamePart, Query, TableFactor, Visit, Visitor};

/// A table name read by a query, found outside the scope of any CTE of that name.
#[derive(Debug, Clone)]
pub struct TableRef {
    /// The name's parts as written, with their source spans.
    pub name: Vec<Ident>,
    /// The parts, normalized with the caller's identifier rule.
    pub parts: Vec<String>,
    /// True for a table function call (`FROM generate_series(1, 3)`; SQL Server's deprecated
    /// `FROM t (NOLOCK)` parses the same way).
    pub is_function: bool,
    /// Normalized CTE names visible where the name occurs (candidates for "did you mean").
    pub ctes_in_scope: Vec<String>,
}

/// The tables `sql` (a statement or statements) reads, in source order: a name read twice
/// appears twice. `normalize` is the dialect's identifier rule, used to match names with CTEs.
pub fn table_refs<V: Visit + ?Sized>(
    sql: &V,
    normalize: impl Fn(&Ident) -> String,
) -> Vec<TableRef> {
    let mut refs = TableRefs {
        normalize,
        scopes: Vec::new(),
        found: Vec::new(),
    };
    let _ = sql.visit(&mut refs);
    refs.found
}

/// The CTEs of one `WITH` clause, as seen while walking the query that owns it.
struct CteScope {
    /// Normalized CTE names, in declaration order.
    names: Vec<String>,
    /// Each CTE's body, to recognise it when the walk enters it (compared by address only).
    bodies: Vec<*const Query>,
    /// How many of `names` are visible at the current point of the walk: a non-recursive CTE
    /// sees only the CTEs declared before it, the main query sees them all.
    visible: usize,
}

struct TableRefs<F> {
    normalize: F,
    scopes: Vec<CteScope>,
    found: Vec<TableRef>,
}

impl<F> TableRefs<F> {
    fn in_scope(&self) -> impl Iterator<Item = &String> {
        self.scopes.iter().flat_map(|s| s.names[..s.visible].iter())
    }

    /// Position of `query` among the CTE bodies of the innermost `WITH` scope.
    fn cte_index(&self, query: &Query) -> Option<usize> {
        self.scopes
            .last()?
            .bodies
            .iter()
            .position(|b| std::ptr::eq(*b, query))
    }
}

impl<F: Fn(&Ident) -> String> Visitor for TableRefs<F> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        // Entering a CTE body: it sees the CTEs declared before it.
        if let Some(i) = self.cte_index(query) {
            if let Some(scope) = self.scopes.last_mut() {
                scope.visible = scope.visible.max(i);
            }
        }
        if let Some(with) = &query.with {
            let names: Vec<String> = with
                .cte_tables
                .iter()
                .map(|c| (self.normalize)(&c.alias.name))
                .collect();
            // `WITH RECURSIVE`: every CTE of the list may read itself and the others.
            let visible = if with.recursive { names.len() } else { 0 };
            self.scopes.push(CteScope {
                bodies: with
                    .cte_tables
                    .iter()
                    .map(|c| &*c.query as *const Query)
                    .collect(),
                names,
                visible,
            });
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if query.with.is_some() {
            self.scopes.pop();
        }
        // Leaving a CTE body: the CTE is visible to the ones after it and to the main query.
        if let Some(i) = self.cte_index(query) {
            if let Some(scope) = self.scopes.last_mut() {
                scope.visible = scope.visible.max(i + 1);
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        let TableFactor::Table { name, args, .. } = factor else {
            return ControlFlow::Continue(());
        };
        let name: Vec<Ident> = name
            .0
            .iter()
            .filter_map(|p| match p {
                ObjectNamePart::Identifier(i) => Some(i.clone()),
                _ => None,
            })
            .collect();
        let parts: Vec<String> = name.iter().map(|i| (self.normalize)(i)).collect();
        if let [single] = parts.as_slice() {
            if self.in_scope().any(|c| c == single) {
                return ControlFlow::Continue(());
            }
        }
        self.found.push(TableRef {
            name,
            parts,
            is_function: args.is_some(),
            ctes_in_scope: self.in_scope().cloned().collect(),
        });
        ControlFlow::Continue(())
    }
}
