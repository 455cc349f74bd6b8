//! Execution: variables, fields and methods of values, pipelines, control structures, the
//! `query` function.

use super::*;

pub(super) const MAX_TEMPLATE_DEPTH: usize = 64;

/// A `query` answer: the instant vector's samples (labels, value).
pub type QueryResult = Result<Vec<(BTreeMap<String, String>, f64)>, String>;

/// Answers a template's `query "expr"`.
pub type QueryFn<'a> = &'a dyn Fn(&str) -> QueryResult;

pub(super) struct Ctx<'d> {
    /// `$` at the top of the running template.
    pub(super) root: Val,
    pub(super) defs: &'d Defs,
    pub(super) vars: Vec<(String, Val)>,
    pub(super) steps: usize,
    pub(super) depth: usize,
    pub(super) query: Option<QueryFn<'d>>,
}

/// `.name` of `v`: a struct's field, a map's key (or one of its methods), a list's method.
pub(super) fn field(v: Val, name: &str) -> Result<Val, TemplateError> {
    Ok(match v {
        Val::Obj(t, mut m) => match m.remove(name) {
            Some(x) => x,
            None => return err(format!("can't evaluate field {name} in type {t}")),
        },
        Val::Map(m) => match name {
            "SortedPairs" => Val::List(
                m.into_iter()
                    .map(|(k, v)| {
                        Val::Obj(
                            "Pair",
                            [("Name", Val::Str(k)), ("Value", Val::Str(v))].into(),
                        )
                    })
                    .collect(),
            ),
            "Names" => Val::List(m.into_keys().map(Val::Str).collect()),
            "Values" => Val::List(m.into_values().map(Val::Str).collect()),
            "Remove" => return err("Remove needs an argument: a list of label names"),
            _ => Val::Str(m.get(name).cloned().unwrap_or_default()),
        },
        // Alertmanager's `Pairs` (from `.SortedPairs`): `.Names`, `.Values`.
        Val::List(l) if name == "Names" || name == "Values" => {
            let key = if name == "Names" { "Name" } else { "Value" };
            let mut out = Vec::with_capacity(l.len());
            for p in l {
                match p {
                    Val::Obj("Pair", mut m) => out.push(m.remove(key).unwrap_or(Val::Nil)),
                    other => {
                        return err(format!(
                            "can't evaluate field {name} in a list of {}",
                            type_name(&other)
                        ))
                    }
                }
            }
            Val::List(out)
        }
        Val::List(l) if name == "Firing" || name == "Resolved" => {
            let want = if name == "Firing" {
                "firing"
            } else {
                "resolved"
            };
            Val::List(
                l.into_iter()
                    .filter(|a| match a {
                        Val::Obj(_, m) => m.get("Status") == Some(&Val::Str(want.into())),
                        _ => false,
                    })
                    .collect(),
            )
        }
        Val::Time(ms) => match name {
            "Unix" => Val::Int(ms.div_euclid(1000)),
            "UnixMilli" => Val::Int(ms),
            "IsZero" => Val::Bool(ms == ZERO_TIME_MS),
            "UTC" | "Local" => Val::Time(ms),
            "Format" => return err("Format needs an argument: a Go time layout"),
            _ => return err(format!("can't evaluate field {name} in type time.Time")),
        },
        Val::Nil => return err(format!("nil pointer evaluating .{name}")),
        other => {
            return err(format!(
                "can't evaluate field {name} in type {}",
                type_name(&other)
            ))
        }
    })
}

/// A method with arguments: `.CommonLabels.Remove .GroupLabels.Names`.
pub(super) fn method(recv: Val, name: &str, args: Vec<Val>) -> Result<Val, TemplateError> {
    match (recv, name) {
        (Val::Map(mut m), "Remove") => {
            want("Remove", &args, 1)?;
            match &args[0] {
                Val::List(names) => {
                    for n in names {
                        m.remove(&n.to_str());
                    }
                }
                other => {
                    return err(format!(
                        "Remove: want a list of label names, got {}",
                        type_name(other)
                    ))
                }
            }
            Ok(Val::Map(m))
        }
        (Val::Time(ms), "Format") => {
            want("Format", &args, 1)?;
            Ok(Val::Str(go_time(ms, &args[0].to_str())))
        }
        (other, _) => err(format!(
            "can't give arguments to .{name} of type {}",
            type_name(&other)
        )),
    }
}

impl Ctx<'_> {
    pub(super) fn fields(&self, mut v: Val, fields: &[String]) -> Result<Val, TemplateError> {
        for f in fields {
            v = field(v, f)?;
        }
        Ok(v)
    }

    /// The value a `$x.a.b` or `.a.b` starts from.
    pub(super) fn base(&mut self, a: &Arg, dot: &Val) -> Result<Val, TemplateError> {
        match a {
            Arg::Var(name, _) if name.is_empty() => Ok(self.root.clone()),
            Arg::Var(name, _) => match self.vars.iter().rev().find(|(n, _)| n == name) {
                Some((_, v)) => Ok(v.clone()),
                None => err(format!("undefined variable \"${name}\"")),
            },
            Arg::Chain(inner, _) => self.arg(inner, dot),
            _ => Ok(dot.clone()),
        }
    }

    pub(super) fn arg(&mut self, a: &Arg, dot: &Val) -> Result<Val, TemplateError> {
        Ok(match a {
            Arg::Nil => Val::Nil,
            Arg::Bool(b) => Val::Bool(*b),
            Arg::Num(f) => Val::Num(*f),
            Arg::Int(i) => Val::Int(*i),
            Arg::Str(s) => Val::Str(s.clone()),
            Arg::Var(_, fields) | Arg::Field(fields) | Arg::Chain(_, fields) => {
                let v = self.base(a, dot)?;
                self.fields(v, fields)?
            }
            Arg::Func(f) => self.call(f, &[], dot, None)?,
            Arg::Pipe(p) => self.pipeline(p, dot)?,
        })
    }

    pub(super) fn pipeline(&mut self, p: &Pipeline, dot: &Val) -> Result<Val, TemplateError> {
        let mut prev: Option<Val> = None;
        for cmd in &p.cmds {
            let v = match &cmd[0] {
                Arg::Func(f) => {
                    let args = &cmd[1..];
                    self.call(f, args, dot, prev.take())?
                }
                a @ (Arg::Var(_, fields) | Arg::Field(fields) | Arg::Chain(_, fields))
                    if (cmd.len() > 1 || prev.is_some()) && !fields.is_empty() =>
                {
                    let (name, path) = fields.split_last().expect("not empty");
                    let recv = self.base(a, dot)?;
                    let recv = self.fields(recv, path)?;
                    let mut args = Vec::with_capacity(cmd.len());
                    for x in &cmd[1..] {
                        args.push(self.arg(x, dot)?);
                    }
                    args.extend(prev.take());
                    method(recv, name, args)?
                }
                a => {
                    if cmd.len() > 1 || prev.is_some() {
                        return err(format!(
                            "can't give argument to non-function {}",
                            describe(a)
                        ));
                    }
                    self.arg(a, dot)?
                }
            };
            prev = Some(v);
        }
        let v = prev.unwrap_or(Val::Nil);
        if let Some(name) = p.decl.first() {
            if p.assign {
                match self.vars.iter_mut().rev().find(|(n, _)| n == name) {
                    Some(slot) => slot.1 = v.clone(),
                    None => return err(format!("undefined variable \"${name}\"")),
                }
            } else {
                self.vars.push((name.clone(), v.clone()));
            }
        }
        Ok(v)
    }

    pub(super) fn call(
        &mut self,
        f: &str,
        args: &[Arg],
        dot: &Val,
        piped: Option<Val>,
    ) -> Result<Val, TemplateError> {
        let mut vals = Vec::with_capacity(args.len() + 1);
        for a in args {
            vals.push(self.arg(a, dot)?);
        }
        if let Some(p) = piped {
            vals.push(p);
        }
        if f == "query" {
            want(f, &vals, 1)?;
            let Some(q) = self.query else {
                return err("query: PromQL queries are only available in rule templates");
            };
            let samples = q(&vals[0].to_str()).or_else(|e| err(format!("query: {e}")))?;
            return Ok(Val::List(
                samples
                    .into_iter()
                    .map(|(l, v)| {
                        Val::Obj(
                            "sample",
                            [("Labels", Val::Map(l)), ("Value", Val::Num(v))].into(),
                        )
                    })
                    .collect(),
            ));
        }
        call_func(f, &vals)
    }

    pub(super) fn run(
        &mut self,
        nodes: &[Node],
        dot: &Val,
        out: &mut String,
    ) -> Result<(), TemplateError> {
        for n in nodes {
            self.steps += 1;
            if self.steps > 100_000 {
                return err("template too expensive (over 100,000 steps)");
            }
            match n {
                Node::Text(t) => out.push_str(t),
                Node::Action(p) => {
                    let v = self.pipeline(p, dot)?;
                    if p.decl.is_empty() {
                        v.print(out);
                    }
                }
                Node::If(arms, otherwise) => {
                    let scope = self.vars.len();
                    let mut done = false;
                    for (cond, body) in arms {
                        if self.pipeline(cond, dot)?.truthy() {
                            self.run(body, dot, out)?;
                            done = true;
                            break;
                        }
                    }
                    if !done {
                        self.run(otherwise, dot, out)?;
                    }
                    self.vars.truncate(scope);
                }
                Node::With(p, body, otherwise) => {
                    let scope = self.vars.len();
                    let v = self.pipeline(p, dot)?;
                    if v.truthy() {
                        self.run(body, &v, out)?;
                    } else {
                        self.run(otherwise, dot, out)?;
                    }
                    self.vars.truncate(scope);
                }
                Node::Range(p, body, otherwise) => {
                    let scope = self.vars.len();
                    let inner = Pipeline {
                        decl: Vec::new(),
                        assign: false,
                        cmds: p.cmds.clone(),
                    };
                    let items: Vec<(Val, Val)> = match self.pipeline(&inner, dot)? {
                        Val::Map(m) => m
                            .into_iter()
                            .map(|(k, v)| (Val::Str(k), Val::Str(v)))
                            .collect(),
                        Val::List(l) => l
                            .into_iter()
                            .enumerate()
                            .map(|(i, v)| (Val::Int(i as i64), v))
                            .collect(),
                        Val::Nil => Vec::new(),
                        v => return err(format!("range can't iterate over {}", type_name(&v))),
                    };
                    if items.is_empty() {
                        self.run(otherwise, dot, out)?;
                    }
                    for (k, val) in items {
                        let s = self.vars.len();
                        match p.decl.as_slice() {
                            [v] => self.vars.push((v.clone(), val.clone())),
                            [k_name, v_name] => {
                                self.vars.push((k_name.clone(), k));
                                self.vars.push((v_name.clone(), val.clone()));
                            }
                            _ => {}
                        }
                        self.run(body, &val, out)?;
                        self.vars.truncate(s);
                    }
                    self.vars.truncate(scope);
                }
                Node::Call(name, p) => {
                    let Some(body) = self.defs.map.get(name).cloned() else {
                        return err(format!("no such template {name:?}"));
                    };
                    if self.depth >= MAX_TEMPLATE_DEPTH {
                        return err(format!(
                            "template {name:?}: calls nested deeper than {MAX_TEMPLATE_DEPTH}"
                        ));
                    }
                    let arg = match p {
                        Some(p) => self.pipeline(p, dot)?,
                        None => Val::Nil,
                    };
                    // A called template starts with no variables and `$` = its argument.
                    let vars = std::mem::take(&mut self.vars);
                    let root = std::mem::replace(&mut self.root, arg.clone());
                    self.depth += 1;
                    let r = self.run(&body, &arg, out);
                    self.depth -= 1;
                    self.root = root;
                    self.vars = vars;
                    r.map_err(|e| TemplateError(format!("template {name:?}: {}", e.0)))?;
                }
            }
        }
        Ok(())
    }
}

pub(super) fn describe(a: &Arg) -> String {
    match a {
        Arg::Var(n, f) => format!(
            "${n}{}",
            f.iter().map(|f| format!(".{f}")).collect::<String>()
        ),
        Arg::Field(f) => f.iter().map(|f| format!(".{f}")).collect(),
        Arg::Str(s) => format!("{s:?}"),
        other => format!("{other:?}"),
    }
}

pub(super) fn type_name(v: &Val) -> &'static str {
    match v {
        Val::Nil => "nil",
        Val::Bool(_) => "bool",
        Val::Num(_) => "float64",
        Val::Int(_) => "int",
        Val::Str(_) => "string",
        Val::Map(_) => "map[string]string",
        Val::List(_) => "slice",
        Val::Obj(name, _) => name,
        Val::Time(_) => "time.Time",
    }
}

pub(super) fn want(f: &str, vals: &[Val], n: usize) -> Result<(), TemplateError> {
    if vals.len() != n {
        return err(format!(
            "wrong number of args for {f}: want {n} got {}",
            vals.len()
        ));
    }
    Ok(())
}

pub(super) fn compare(f: &str, a: &Val, b: &Val) -> Result<std::cmp::Ordering, TemplateError> {
    use std::cmp::Ordering;
    match (a, b) {
        (Val::Str(x), Val::Str(y)) => Ok(x.cmp(y)),
        (Val::Bool(x), Val::Bool(y)) if f == "eq" || f == "ne" => Ok(x.cmp(y)),
        (Val::Num(_) | Val::Int(_), Val::Num(_) | Val::Int(_)) => {
            let (x, y) = (a.to_f64(f)?, b.to_f64(f)?);
            Ok(x.partial_cmp(&y).unwrap_or(Ordering::Less))
        }
        _ => err(format!(
            "{f}: incompatible types for comparison ({} and {})",
            type_name(a),
            type_name(b)
        )),
    }
}
