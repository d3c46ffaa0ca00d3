//! The Rhai sandbox shared by playbooks and diagnosis rules: an operation
//! limit, call-depth and size limits, a wall-clock budget, no `eval`, and
//! no file, process or network access (scripts reach the world only
//! through the host functions registered on the engine).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rhai::{Engine, EvalAltResult};

/// Sandbox limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Operations per run.
    pub max_operations: u64,
    /// Wall-clock budget per run.
    pub budget: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 200_000,
            budget: Duration::from_millis(250),
        }
    }
}

/// A sandboxed engine and the clock that stops a run past its budget.
pub struct Sandbox {
    /// The engine; register host functions on it.
    pub engine: Engine,
    deadline: Arc<Mutex<Option<Instant>>>,
    limits: Limits,
    /// The names of the functions the engine knows, once asked.
    known: std::sync::OnceLock<std::collections::HashSet<String>>,
}

/// Calls `f` on every function call in `ast`, in an expression or standing
/// alone as a statement, with its position.
fn each_call(ast: &rhai::AST, mut f: impl FnMut(&rhai::FnCallExpr, rhai::Position)) {
    use rhai::{ASTNode, Expr, Stmt};
    ast.walk(&mut |path: &[ASTNode]| {
        match path.last() {
            Some(ASTNode::Expr(Expr::FnCall(call, pos))) => f(call, *pos),
            Some(ASTNode::Stmt(Stmt::FnCall(call, pos))) => f(call, *pos),
            _ => {}
        }
        true
    });
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Held only for a push or a read, never across a call into Rhai.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sandbox {
    /// Every call in `ast` to a function that exists nowhere: not a host
    /// function, not one of Rhai's own, not one the script defines. Rhai
    /// resolves calls only when they run, so without this a script calling
    /// `system()` or `open_file()` loads and fails at 3 a.m. instead.
    /// Returns (line, name) of each, in order.
    pub fn unknown_calls(&self, ast: &rhai::AST) -> Vec<(usize, String)> {
        use rhai::ASTNode;
        // Functions the engine knows, by name (qualified for modules): read
        // once, after the host functions were registered.
        let known = self.known.get_or_init(|| {
            self.engine
                .gen_fn_signatures(true)
                .into_iter()
                .filter_map(|sig| sig.split('(').next().map(|n| n.trim().to_string()))
                .chain(
                    [
                        "print",
                        "debug",
                        "type_of",
                        "eval",
                        "Fn",
                        "call",
                        "curry",
                        "is_shared",
                        "is_def_var",
                        "is_def_fn",
                        "this",
                    ]
                    .map(String::from),
                )
                .collect()
        });
        let own: std::collections::HashSet<String> =
            ast.iter_functions().map(|f| f.name.to_string()).collect();
        // Variables a script may call like functions (closures).
        let mut vars = std::collections::HashSet::new();
        ast.walk(&mut |path: &[ASTNode]| {
            if let Some(ASTNode::Stmt(rhai::Stmt::Var(x, ..))) = path.last() {
                vars.insert(x.0.name.to_string());
            }
            true
        });
        let mut out = Vec::new();
        each_call(ast, |call, pos| {
            if call.is_operator_call() {
                return;
            }
            let name = if call.is_qualified() {
                format!("{}::{}", call.namespace, call.name)
            } else {
                call.name.to_string()
            };
            if !known.contains(&name) && !own.contains(&name) && !vars.contains(call.name.as_str())
            {
                out.push((pos.line().unwrap_or(0), name));
            }
        });
        out.sort();
        out.dedup();
        out
    }

    /// Every `module::name(args)` call in `ast`, in source order: (line,
    /// module, name, argument count). Read from the AST, so comments and
    /// strings never count.
    pub fn qualified_calls(ast: &rhai::AST) -> Vec<(usize, String, String, usize)> {
        let mut out = Vec::new();
        each_call(ast, |call, pos| {
            if call.is_qualified() {
                out.push((
                    pos.line().unwrap_or(0),
                    pos.position().unwrap_or(0),
                    call.namespace.to_string(),
                    call.name.to_string(),
                    call.args.len(),
                ));
            }
        });
        out.sort();
        out.into_iter()
            .map(|(line, _, module, name, args)| (line, module, name, args))
            .collect()
    }

    /// A new sandboxed engine; `log` names the tracing target of `print`.
    pub fn new(limits: Limits, log: &'static str) -> Self {
        let deadline: Arc<Mutex<Option<Instant>>> = Arc::default();
        let mut engine = Engine::new();
        engine.set_max_operations(limits.max_operations);
        engine.set_max_call_levels(32);
        engine.set_max_expr_depths(64, 32);
        engine.set_max_string_size(16 * 1024);
        engine.set_max_array_size(1024);
        engine.set_max_map_size(256);
        engine.disable_symbol("eval");
        engine.on_print(move |s| tracing::info!(script = log, "{s}"));
        engine.on_debug(move |s, src, pos| tracing::debug!(script = log, ?src, %pos, "{s}"));
        let d = deadline.clone();
        engine.on_progress(move |ops| {
            if ops % 256 == 0 && lock(&d).is_some_and(|t| Instant::now() > t) {
                Some("wall-clock budget exceeded".into())
            } else {
                None
            }
        });
        Sandbox {
            engine,
            deadline,
            limits,
            known: std::sync::OnceLock::new(),
        }
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Runs `f` under the wall-clock budget.
    pub fn guarded<T>(
        &self,
        f: impl FnOnce(&Engine) -> Result<T, Box<EvalAltResult>>,
    ) -> Result<T, Box<EvalAltResult>> {
        *lock(&self.deadline) = Some(Instant::now() + self.limits.budget);
        let r = f(&self.engine);
        *lock(&self.deadline) = None;
        r
    }

    /// A run's error, in words (a budget stop says so).
    pub fn describe(&self, e: EvalAltResult) -> String {
        match e {
            EvalAltResult::ErrorTerminated(..) => format!(
                "wall-clock budget of {} ms exceeded",
                self.limits.budget.as_millis()
            ),
            other => other.to_string(),
        }
    }
}
