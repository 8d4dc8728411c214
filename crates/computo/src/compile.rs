//! Compiling a script document into an expression tree.
//!
//! Compilation applies the evaluation rules of the language description (section 1) once, ahead
//! of time: non-arrays and arrays whose head is not a string are literals; other arrays are
//! operator calls, resolved to an [`Op`] with their arity checked. Arguments that must have a
//! fixed form (`let` bindings, `obj` pairs, lambda parameters, `$` paths) are checked and
//! pre-digested here, and a literal `get` pointer is parsed here. Run-time errors (division by
//! zero, a missing path, a malformed literal pointer) stay run-time errors, so a branch that is
//! never taken still never fails.

use serde_json::Value;

use crate::error::{CompileError, CompileErrorKind};
use crate::limits::Limits;
use crate::op::Op;
use crate::pointer::{self, Pointer, PointerError};

/// One node of a compiled script.
#[derive(Debug)]
pub(crate) enum Node {
    /// A value that evaluates to itself (scalars, objects, arrays not headed by a string).
    Literal(Value),
    /// An operator call.
    Expr(Box<Expr>),
}

/// An operator call with its script path.
#[derive(Debug)]
pub(crate) struct Expr {
    pub(crate) op: Op,
    pub(crate) form: Form,
    /// JSON Pointer of this expression inside the script, for error messages.
    pub(crate) path: Box<str>,
    /// Nesting depth below the root of its tree, used to decide when to check the stack.
    pub(crate) depth: usize,
}

/// The operator-specific shape of an [`Expr`].
#[derive(Debug)]
pub(crate) enum Form {
    Input,
    Inputs,
    Var(VarPath),
    Get {
        target: Node,
        pointer: PointerArg,
    },
    Obj(Box<[(Key, Node)]>),
    Let {
        bindings: Box<[(Box<str>, Node)]>,
        body: Node,
    },
    Lambda(Lambda),
    /// Every other operator: its argument expressions, evaluated as the operator decides.
    Args(Box<[Node]>),
}

/// A `$` path split into the variable name and the segments walked inside its value.
#[derive(Debug)]
pub(crate) struct VarPath {
    pub(crate) text: Box<str>,
    pub(crate) name: Box<str>,
    pub(crate) rest: Box<[Box<str>]>,
}

/// The pointer argument of `get`: parsed at compile time when it is a literal string.
#[derive(Debug)]
pub(crate) enum PointerArg {
    Static {
        text: Box<str>,
        parsed: std::result::Result<Pointer, PointerError>,
    },
    Dynamic(Node),
}

/// An `obj` key: a literal string, or an expression that must evaluate to one.
#[derive(Debug)]
pub(crate) enum Key {
    Static(Box<str>),
    Dynamic(Node),
}

/// A compiled lambda: one parameter, a body, and the source it came from (the lambda's value).
#[derive(Debug)]
pub(crate) struct Lambda {
    pub(crate) param: Box<str>,
    pub(crate) body: Node,
    pub(crate) source: Value,
}

/// Where a compile starts: a whole script, or a lambda met as data during evaluation.
pub(crate) struct Compiler<'l> {
    limits: &'l Limits,
    /// Prepended to every path: empty for a script, `<expr path>:` for a lambda from data.
    prefix: String,
}

/// Below this much remaining stack, compile and eval continue on a fresh heap-allocated stack.
pub(crate) const RED_ZONE: usize = 256 * 1024;
/// Size of each stack segment allocated when the red zone is reached.
pub(crate) const STACK_SEGMENT: usize = 4 * 1024 * 1024;
/// How often (in nesting levels) compile and eval check the remaining stack.
pub(crate) const STACK_CHECK_EVERY: usize = 8;

type Result<T> = std::result::Result<T, CompileError>;

impl<'l> Compiler<'l> {
    pub(crate) fn new(limits: &'l Limits, prefix: String) -> Self {
        Compiler { limits, prefix }
    }

    /// Compiles a whole script.
    pub(crate) fn script(&self, value: &Value) -> Result<Node> {
        let mut path = String::new();
        stacker::maybe_grow(RED_ZONE, STACK_SEGMENT, || self.node(value, &mut path, 0))
    }

    /// Compiles a lambda value (`["lambda", [param], body]`) that arrived as data.
    pub(crate) fn data_lambda(&self, value: &Value) -> Result<Lambda> {
        let mut path = String::new();
        let items = value.as_array().map(Vec::as_slice).unwrap_or_default();
        stacker::maybe_grow(RED_ZONE, STACK_SEGMENT, || {
            self.lambda(value, items.get(1..).unwrap_or_default(), &mut path, 0)
        })
    }

    fn error(&self, path: &str, kind: CompileErrorKind) -> CompileError {
        CompileError {
            path: format!("{}{path}", self.prefix),
            kind,
        }
    }

    fn node(&self, value: &Value, path: &mut String, depth: usize) -> Result<Node> {
        let Value::Array(items) = value else {
            return Ok(Node::Literal(value.clone()));
        };
        let Some(head) = items.first() else {
            return Err(self.error(path, CompileErrorKind::EmptyExpression));
        };
        let Value::String(name) = head else {
            return Ok(Node::Literal(value.clone()));
        };
        if depth >= self.limits.max_nesting {
            let limit = self.limits.max_nesting;
            return Err(self.error(path, CompileErrorKind::TooDeep { limit }));
        }
        if depth.is_multiple_of(STACK_CHECK_EVERY) {
            stacker::maybe_grow(RED_ZONE, STACK_SEGMENT, || {
                self.expr(name, value, items, path, depth)
            })
        } else {
            self.expr(name, value, items, path, depth)
        }
    }

    fn expr(
        &self,
        name: &str,
        value: &Value,
        items: &[Value],
        path: &mut String,
        depth: usize,
    ) -> Result<Node> {
        let op = match Op::from_name(name) {
            Some(op) => op,
            None if name.is_empty() => {
                return Err(self.error(path, CompileErrorKind::EmptyExpression));
            }
            None => {
                let kind = CompileErrorKind::UnknownOperator(name.to_owned());
                return Err(self.error(path, kind));
            }
        };
        let args = &items[1..];
        if !op.arity().accepts(args.len()) {
            let (expected, got) = (op.arity(), args.len());
            return Err(self.error(path, CompileErrorKind::Arity { op, expected, got }));
        }
        let shape = |expected| CompileErrorKind::Shape { op, expected };
        let form = match op {
            Op::Input => Form::Input,
            Op::Inputs => Form::Inputs,
            Op::Var => {
                let var = var_path(&args[0]).map_err(|e| self.error(path, shape(e)))?;
                Form::Var(var)
            }
            Op::Get => {
                let target = self.arg(args, 0, path, depth)?;
                let pointer = match &args[1] {
                    Value::String(text) => PointerArg::Static {
                        text: text.as_str().into(),
                        parsed: pointer::parse(text),
                    },
                    Value::Array(_) => PointerArg::Dynamic(self.arg(args, 1, path, depth)?),
                    _ => return Err(self.error(path, shape("pointer must be a string"))),
                };
                Form::Get { target, pointer }
            }
            Op::Obj => self.obj(op, args, path, depth)?,
            Op::Let => self.let_(op, args, path, depth)?,
            Op::Lambda => Form::Lambda(self.lambda(value, args, path, depth)?),
            _ => {
                let mut nodes = Vec::with_capacity(args.len());
                for i in 0..args.len() {
                    nodes.push(self.arg(args, i, path, depth)?);
                }
                Form::Args(nodes.into_boxed_slice())
            }
        };
        Ok(Node::Expr(Box::new(Expr {
            op,
            form,
            path: format!("{}{path}", self.prefix).into_boxed_str(),
            depth,
        })))
    }

    /// Compiles argument `i` (script index `i + 1`) of the expression at `path`.
    fn arg(&self, args: &[Value], i: usize, path: &mut String, depth: usize) -> Result<Node> {
        self.at(&args[i], &[i + 1], path, depth + 1)
    }

    /// Compiles `value`, found at `path` followed by the index segments `at`.
    fn at(&self, value: &Value, at: &[usize], path: &mut String, depth: usize) -> Result<Node> {
        let len = path.len();
        for i in at {
            path.push('/');
            path.push_str(&i.to_string());
        }
        let node = self.node(value, path, depth);
        path.truncate(len);
        node
    }

    fn obj(&self, op: Op, args: &[Value], path: &mut String, depth: usize) -> Result<Form> {
        let mut pairs = Vec::with_capacity(args.len());
        for (i, pair) in args.iter().enumerate() {
            let shape = |at: String, expected| {
                self.error(
                    &format!("{path}{at}"),
                    CompileErrorKind::Shape { op, expected },
                )
            };
            let Some([key, value]) = pair.as_array().map(Vec::as_slice) else {
                return Err(shape(format!("/{}", i + 1), "takes [key, value] pairs"));
            };
            let key = match key {
                Value::String(k) => Key::Static(k.as_str().into()),
                Value::Array(_) => Key::Dynamic(self.at(key, &[i + 1, 0], path, depth + 1)?),
                _ => return Err(shape(format!("/{}/0", i + 1), "keys must be strings")),
            };
            pairs.push((key, self.at(value, &[i + 1, 1], path, depth + 1)?));
        }
        Ok(Form::Obj(pairs.into_boxed_slice()))
    }

    fn let_(&self, op: Op, args: &[Value], path: &mut String, depth: usize) -> Result<Form> {
        let shape =
            |path: &str, expected| self.error(path, CompileErrorKind::Shape { op, expected });
        let Value::Array(list) = &args[0] else {
            let expected = "bindings must be an array of [name, expression] pairs";
            return Err(shape(&format!("{path}/1"), expected));
        };
        let mut bindings = Vec::with_capacity(list.len());
        for (i, binding) in list.iter().enumerate() {
            let Some([name, value]) = binding.as_array().map(Vec::as_slice) else {
                return Err(shape(
                    &format!("{path}/1/{i}"),
                    "binding must be [name, expression]",
                ));
            };
            let Value::String(name) = name else {
                return Err(shape(
                    &format!("{path}/1/{i}/0"),
                    "variable name must be a string",
                ));
            };
            let node = self.at(value, &[1, i, 1], path, depth + 1)?;
            bindings.push((name.as_str().into(), node));
        }
        let body = self.arg(args, 1, path, depth)?;
        Ok(Form::Let {
            bindings: bindings.into_boxed_slice(),
            body,
        })
    }

    /// Compiles `["lambda", params, body]`; `args` is `[params, body]`.
    fn lambda(
        &self,
        value: &Value,
        args: &[Value],
        path: &mut String,
        depth: usize,
    ) -> Result<Lambda> {
        let shape = |path: &str, expected| {
            let kind = CompileErrorKind::Shape {
                op: Op::Lambda,
                expected,
            };
            self.error(path, kind)
        };
        let [params, _body] = args else {
            let (expected, got) = (Op::Lambda.arity(), args.len());
            let kind = CompileErrorKind::Arity {
                op: Op::Lambda,
                expected,
                got,
            };
            return Err(self.error(path, kind));
        };
        let Value::Array(params) = params else {
            return Err(shape(path, "parameters must be an array"));
        };
        let [Value::String(param)] = params.as_slice() else {
            return Err(shape(path, "must have exactly one string parameter"));
        };
        let body = self.arg(args, 1, path, depth)?;
        Ok(Lambda {
            param: param.as_str().into(),
            body,
            source: value.clone(),
        })
    }
}

/// Splits a `$` path: a literal string `/name/segment/…`. A trailing `/` is ignored and `//`
/// is an empty segment; `~` escapes are not decoded (section 5.6).
fn var_path(arg: &Value) -> std::result::Result<VarPath, &'static str> {
    let Value::String(text) = arg else {
        return Err("takes a literal string path such as \"/name\"");
    };
    let Some(rest) = text.strip_prefix('/') else {
        return Err("path must start with '/'");
    };
    let mut segments: Vec<&str> = rest.split('/').collect();
    if segments.len() > 1 && segments.last() == Some(&"") {
        segments.pop();
    }
    let name = segments[0];
    if name.is_empty() {
        return Err("path is missing a variable name");
    }
    Ok(VarPath {
        text: text.as_str().into(),
        name: name.into(),
        rest: segments[1..].iter().map(|s| Box::from(*s)).collect(),
    })
}
