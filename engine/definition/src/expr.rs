//! Conditions over the saga context: `when:` on a step and the branches of a `choice:`.
//!
//! ```text
//! expr  := or
//! or    := and ('or' and)*
//! and   := not ('and' not)*
//! not   := 'not' not | cmp
//! cmp   := value (('==' | '!=' | '<' | '<=' | '>' | '>=' | 'in') value)?
//! value := path | number | string | 'true' | 'false' | 'null'
//!        | '[' (value (',' value)*)? ']' | 'exists' '(' path ')' | '(' expr ')'
//! ```
//!
//! Paths are template [`Path`]s (`$.a.b`, `$.lines.0`); numbers are integers or decimals with an
//! optional leading `-`; strings are single or double quoted, with `\` escaping a quote or a
//! backslash. A missing path reads as `null`. `==` and `!=` are JSON equality with numbers
//! compared by value (`1 == 1.0`); `<`, `<=`, `>`, `>=` compare two numbers or two strings;
//! `a in b` is membership in a list, a substring of a string, or a key of an object.
//! `and`, `or` and `not` short-circuit and take booleans, `null` counting as false.
//!
//! Mistakes that are certain from the text alone (comparing a string literal with a number,
//! `3 and ...`) are refused by [`Condition::parse`]; the rest are [`EvalError`]s.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

use serde_json::{Number, Value};

use crate::diagnostics::did_you_mean;
use crate::template::Path;
use crate::yaml::shorten;

/// The reserved words of the language.
const KEYWORDS: &[&str] = &["and", "or", "not", "in", "true", "false", "null", "exists"];

/// Most parentheses, lists and `not`s nested in one another, which bounds recursion.
const MAX_DEPTH: usize = 32;

const VALUE_HINT: &str = "a value is a path such as `$.amount`, a number, a quoted string, `true`, `false`, `null`, a list such as `['FR', 'DE']`, `exists($.path)` or a condition in parentheses";
const NUMBER_HINT: &str =
    "numbers are written like `100`, `-3` or `12.5`; quote text, e.g. `'10s'`";
const PATH_HINT: &str =
    "paths look like `$.amount`, `$.customer.id` or `$.lines.0` (`$` alone is the whole context)";
const COMPARE_HINT: &str =
    "write comparisons as `$.amount > 100`, and join them with `and` or `or`";
const ORDER_HINT: &str = "`<`, `<=`, `>` and `>=` compare two numbers or two strings";
const BOOLEAN_HINT: &str =
    "`and`, `or` and `not` combine conditions; compare the value first, e.g. `$.count > 3`";

/// A boolean expression over the saga context.
#[derive(Debug, Clone)]
pub struct Condition {
    source: String,
    expr: Expr,
}

/// Conditions are equal when written the same way.
impl PartialEq for Condition {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// Why a condition's text does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    /// 0-based character offset into the text where the problem is.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

/// Why a condition could not be evaluated on a context.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("condition `{condition}`: {message}")]
pub struct EvalError {
    /// The condition's text.
    pub condition: String,
    /// What went wrong, e.g. comparing a string with a number.
    pub message: String,
}

impl Condition {
    /// Parses a condition's text.
    pub fn parse(text: &str) -> Result<Condition, ExprError> {
        let mut parser = Parser {
            lexer: Lexer { text, at: 0 },
            peeked: None,
            prev: None,
            depth: 0,
        };
        if text.trim().is_empty() {
            return Err(ExprError {
                offset: 0,
                message: "the condition is empty".to_owned(),
                hint: "write a condition such as `$.amount > 100`".to_owned(),
            });
        }
        let expr = parser.or()?;
        let next = parser.peek()?.clone();
        if next.tok != Tok::End {
            return Err(parser.trailing(&next));
        }
        let checker = Checker { text };
        checker.boolean(&expr, None)?;
        checker.check(&expr)?;
        Ok(Condition {
            source: text.to_owned(),
            expr,
        })
    }

    /// Evaluates the condition on `context`.
    pub fn eval(&self, context: &Value) -> Result<bool, EvalError> {
        let eval = Eval {
            text: &self.source,
            context,
        };
        eval.truth(&self.expr).map_err(|message| EvalError {
            condition: self.source.clone(),
            message,
        })
    }

    /// Every context path the condition reads.
    pub fn paths(&self) -> Vec<&Path> {
        self.located_paths()
            .into_iter()
            .map(|(_, path)| path)
            .collect()
    }

    /// Every context path the condition reads, with its 0-based character offset, in source order.
    pub(crate) fn located_paths(&self) -> Vec<(usize, &Path)> {
        let mut paths = Vec::new();
        self.expr.collect_paths(&self.source, &mut paths);
        paths
    }

    /// The condition's text as written.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// A node of the syntax tree with its byte span in the text.
#[derive(Debug, Clone)]
struct Expr {
    start: usize,
    end: usize,
    kind: ExprKind,
}

#[derive(Debug, Clone)]
enum ExprKind {
    /// Two operands or more (chains are flat, so long ones do not deepen the tree).
    Or(Vec<Expr>),
    /// Two operands or more.
    And(Vec<Expr>),
    Not(Box<Expr>),
    /// Operator, byte offset of the operator, operands.
    Compare(Op, usize, Box<Expr>, Box<Expr>),
    Path(Path),
    /// The path and its byte offset.
    Exists(Path, usize),
    Literal(Value),
    List(Vec<Expr>),
}

impl Expr {
    fn collect_paths<'a>(&'a self, text: &str, paths: &mut Vec<(usize, &'a Path)>) {
        match &self.kind {
            ExprKind::Or(operands) | ExprKind::And(operands) => operands
                .iter()
                .for_each(|operand| operand.collect_paths(text, paths)),
            ExprKind::Compare(_, _, a, b) => {
                a.collect_paths(text, paths);
                b.collect_paths(text, paths);
            }
            ExprKind::Not(inner) => inner.collect_paths(text, paths),
            ExprKind::Path(path) => paths.push((char_offset(text, self.start), path)),
            ExprKind::Exists(path, at) => paths.push((char_offset(text, *at), path)),
            ExprKind::Literal(_) => {}
            ExprKind::List(items) => items.iter().for_each(|i| i.collect_paths(text, paths)),
        }
    }

    fn source<'t>(&self, text: &'t str) -> &'t str {
        &text[self.start..self.end]
    }

    /// The type of the value, when the text alone tells it.
    fn static_type(&self) -> Option<Type> {
        match &self.kind {
            ExprKind::Path(_) => None,
            ExprKind::Literal(value) => Some(Type::of(value)),
            ExprKind::List(_) => Some(Type::List),
            _ => Some(Type::Boolean),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::In => "in",
        }
    }
}

/// JSON value types, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Null,
    Boolean,
    Number,
    String,
    List,
    Object,
}

impl Type {
    fn of(value: &Value) -> Type {
        match value {
            Value::Null => Type::Null,
            Value::Bool(_) => Type::Boolean,
            Value::Number(_) => Type::Number,
            Value::String(_) => Type::String,
            Value::Array(_) => Type::List,
            Value::Object(_) => Type::Object,
        }
    }

    /// With its article: "a string", "null".
    fn name(self) -> &'static str {
        match self {
            Type::Null => "null",
            Type::Boolean => "a boolean",
            Type::Number => "a number",
            Type::String => "a string",
            Type::List => "a list",
            Type::Object => "an object",
        }
    }
}

/// One operand alone, or the operands joined by `and` or `or`.
fn chain(mut operands: Vec<Expr>, kind: fn(Vec<Expr>) -> ExprKind) -> Expr {
    if operands.len() == 1 {
        return operands.pop().expect("one operand");
    }
    let start = operands.first().map_or(0, |e| e.start);
    let end = operands.last().map_or(0, |e| e.end);
    Expr {
        start,
        end,
        kind: kind(operands),
    }
}

fn char_offset(text: &str, byte: usize) -> usize {
    text[..byte].chars().count()
}

fn error(
    text: &str,
    byte: usize,
    message: impl Into<String>,
    hint: impl Into<String>,
) -> ExprError {
    ExprError {
        offset: char_offset(text, byte),
        message: message.into(),
        hint: hint.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Path(Path),
    Number(Number),
    Str(String),
    Word(String),
    Op(Op),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    End,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    start: usize,
    end: usize,
}

struct Lexer<'t> {
    text: &'t str,
    /// Byte offset of the next character.
    at: usize,
}

impl Lexer<'_> {
    fn peek_char(&self, ahead: usize) -> Option<char> {
        self.text[self.at..].chars().nth(ahead)
    }

    fn bump_char(&mut self) -> Option<char> {
        let c = self.peek_char(0)?;
        self.at += c.len_utf8();
        Some(c)
    }

    fn next(&mut self) -> Result<Token, ExprError> {
        // The end of the text is placed right after the last token, not after trailing blanks.
        let after_last = self.at;
        while self.peek_char(0).is_some_and(char::is_whitespace) {
            let _ = self.bump_char();
        }
        let start = self.at;
        let Some(c) = self.bump_char() else {
            return Ok(Token {
                tok: Tok::End,
                start: after_last,
                end: after_last,
            });
        };
        let next = self.peek_char(0);
        let text = self.text;
        let fail = |message: String, hint: &str| Err(error(text, start, message, hint));
        let tok = match c {
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '[' => Tok::LBracket,
            ']' => Tok::RBracket,
            ',' => Tok::Comma,
            '=' => match next {
                Some('=') => {
                    let _ = self.bump_char();
                    Tok::Op(Op::Eq)
                }
                Some('>') => return fail("`=>` is not an operator".into(), "did you mean `>=`?"),
                Some('<') => return fail("`=<` is not an operator".into(), "did you mean `<=`?"),
                _ => {
                    return fail(
                        "`=` is not an operator".into(),
                        "write `==` to test equality, e.g. `$.country == 'FR'`",
                    )
                }
            },
            '!' => {
                if next != Some('=') {
                    return fail(
                        "`!` is not an operator".into(),
                        "write `not` to negate a condition, e.g. `not exists($.coupon)`",
                    );
                }
                let _ = self.bump_char();
                Tok::Op(Op::Ne)
            }
            '<' => match next {
                Some('=') => {
                    let _ = self.bump_char();
                    Tok::Op(Op::Le)
                }
                Some('>') => return fail("`<>` is not an operator".into(), "did you mean `!=`?"),
                _ => Tok::Op(Op::Lt),
            },
            '>' => {
                if next == Some('=') {
                    let _ = self.bump_char();
                    Tok::Op(Op::Ge)
                } else {
                    Tok::Op(Op::Gt)
                }
            }
            '&' => {
                let op = if next == Some('&') { "&&" } else { "&" };
                return fail(
                    format!("`{op}` is not an operator"),
                    "write `and` to require both conditions",
                );
            }
            '|' => {
                let op = if next == Some('|') { "||" } else { "|" };
                return fail(
                    format!("`{op}` is not an operator"),
                    "write `or` to accept either condition",
                );
            }
            '\'' | '"' => Tok::Str(self.string(c, start)?),
            '$' => Tok::Path(self.path(start)?),
            '-' if !next.is_some_and(|n| n.is_ascii_digit()) => {
                return fail(
                    "unexpected `-`".into(),
                    "write negative numbers with the minus against the digits, e.g. `-3`; conditions have no arithmetic",
                )
            }
            '.' if next.is_some_and(|n| n.is_ascii_digit()) => {
                let _ = self.bump_char();
                while self.peek_char(0).is_some_and(|c| c.is_ascii_digit()) {
                    let _ = self.bump_char();
                }
                let written = &text[start..self.at];
                return fail(
                    format!("invalid number `{written}`"),
                    &format!("write a digit before the point: `0{written}`"),
                );
            }
            '-' | '0'..='9' => Tok::Number(self.number(start)?),
            c if c.is_alphabetic() || c == '_' => {
                while self
                    .peek_char(0)
                    .is_some_and(|c| c.is_alphanumeric() || c == '_')
                {
                    let _ = self.bump_char();
                }
                let word = &text[start..self.at];
                if !KEYWORDS.contains(&word) {
                    return Err(unknown_word(text, start, word));
                }
                Tok::Word(word.to_owned())
            }
            other => {
                return fail(
                    format!("unexpected character `{other}`"),
                    "conditions are made of paths (`$.a`), numbers, quoted strings, lists, `==`, `!=`, `<`, `<=`, `>`, `>=`, `in`, `and`, `or`, `not`, `exists(...)` and parentheses",
                )
            }
        };
        Ok(Token {
            tok,
            start,
            end: self.at,
        })
    }

    /// The rest of a string after its opening `quote` at byte `start`.
    fn string(&mut self, quote: char, start: usize) -> Result<String, ExprError> {
        let mut value = String::new();
        loop {
            let at = self.at;
            match self.bump_char() {
                None => {
                    return Err(error(
                        self.text,
                        start,
                        "unclosed string",
                        format!("end the string with {quote}, e.g. {quote}FR{quote}"),
                    ))
                }
                Some(c) if c == quote => return Ok(value),
                Some('\\') => match self.bump_char() {
                    Some(c @ ('\'' | '"' | '\\')) => value.push(c),
                    other => {
                        let written = other.map_or(String::from("\\"), |c| format!("\\{c}"));
                        return Err(error(
                            self.text,
                            at,
                            format!("unknown escape `{written}` in a string"),
                            "in strings, `\\` only escapes a quote (`\\'`, `\\\"`) or itself (`\\\\`); write other characters as they are",
                        ));
                    }
                },
                Some(c) => value.push(c),
            }
        }
    }

    /// The rest of a path after its `$` at byte `start`.
    fn path(&mut self, start: usize) -> Result<Path, ExprError> {
        while self
            .peek_char(0)
            .is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            let _ = self.bump_char();
        }
        let written = &self.text[start..self.at];
        let path = Path::parse(written)
            .map_err(|e| error(self.text, start, format!("invalid path: {e}"), PATH_HINT))?;
        if self.peek_char(0) == Some('[') {
            let index: String = self.text[self.at + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            let index = if index.is_empty() { "0" } else { &index };
            return Err(error(
                self.text,
                self.at,
                format!("unexpected `[` after the path `{written}`"),
                format!("index lists with a dot: `{written}.{index}`"),
            ));
        }
        Ok(path)
    }

    /// The rest of a number whose first character (`-` or a digit) is at byte `start`.
    fn number(&mut self, start: usize) -> Result<Number, ExprError> {
        let digits = |lexer: &mut Self| {
            while lexer.peek_char(0).is_some_and(|c| c.is_ascii_digit()) {
                let _ = lexer.bump_char();
            }
        };
        digits(self);
        let mut decimal = false;
        if self.peek_char(0) == Some('.') && self.peek_char(1).is_some_and(|c| c.is_ascii_digit()) {
            decimal = true;
            let _ = self.bump_char();
            digits(self);
        }
        if self
            .peek_char(0)
            .is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '.'))
        {
            while self
                .peek_char(0)
                .is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '-'))
            {
                let _ = self.bump_char();
            }
            let written = &self.text[start..self.at];
            let hint = if written.ends_with('.') {
                "write decimals with digits on both sides of the point, e.g. `1.0`"
            } else {
                NUMBER_HINT
            };
            return Err(error(
                self.text,
                start,
                format!("invalid number `{}`", shorten(written)),
                hint,
            ));
        }
        let written = &self.text[start..self.at];
        let number = if decimal {
            None
        } else {
            written
                .parse::<i64>()
                .map(Number::from)
                .or_else(|_| written.parse::<u64>().map(Number::from))
                .ok()
        };
        number
            .or_else(|| written.parse::<f64>().ok().and_then(Number::from_f64))
            .ok_or_else(|| {
                error(
                    self.text,
                    start,
                    format!("the number `{}` is too large", shorten(written)),
                    NUMBER_HINT,
                )
            })
    }
}

fn unknown_word(text: &str, start: usize, word: &str) -> ExprError {
    let lower = word.to_lowercase();
    let hint = if KEYWORDS.contains(&lower.as_str()) {
        format!("keywords are lower case: write `{lower}`")
    } else if let Some(keyword) = did_you_mean(word, KEYWORDS) {
        format!("did you mean `{keyword}`?")
    } else if matches!(lower.as_str(), "is" | "eq" | "equals") {
        "write `==` to test equality, e.g. `$.country == 'FR'`".to_owned()
    } else {
        format!("read context values with a path, e.g. `$.{word}`, and quote text, e.g. `'{word}'`")
    };
    error(
        text,
        start,
        format!("unknown word `{}`", shorten(word)),
        hint,
    )
}

// ---------------------------------------------------------------------------------------------
// Parser

struct Parser<'t> {
    lexer: Lexer<'t>,
    peeked: Option<Token>,
    /// Byte span of the last token consumed.
    prev: Option<(usize, usize)>,
    /// Parentheses, lists and `not`s open around the current position.
    depth: usize,
}

impl<'t> Parser<'t> {
    fn text(&self) -> &'t str {
        self.lexer.text
    }

    fn peek(&mut self) -> Result<&Token, ExprError> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lexer.next()?);
        }
        Ok(self.peeked.as_ref().expect("just peeked"))
    }

    fn bump(&mut self) -> Result<Token, ExprError> {
        let _ = self.peek()?;
        let token = self.peeked.take().expect("just peeked");
        self.prev = Some((token.start, token.end));
        Ok(token)
    }

    fn is_word(&mut self, word: &str) -> Result<bool, ExprError> {
        Ok(matches!(&self.peek()?.tok, Tok::Word(w) if w == word))
    }

    fn written(&self, token: &Token) -> String {
        shorten(&self.text()[token.start..token.end])
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        let mut operands = vec![self.and()?];
        while self.is_word("or")? {
            let _ = self.bump()?;
            operands.push(self.and()?);
        }
        Ok(chain(operands, ExprKind::Or))
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut operands = vec![self.not()?];
        while self.is_word("and")? {
            let _ = self.bump()?;
            operands.push(self.not()?);
        }
        Ok(chain(operands, ExprKind::And))
    }

    /// Enters a parenthesis, a list or a `not` opened by `token`.
    fn nest(&mut self, token: &Token) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(error(
                self.text(),
                token.start,
                format!("the condition nests more than {MAX_DEPTH} levels deep"),
                "simplify it: use fewer nested parentheses, lists and `not`s",
            ));
        }
        Ok(())
    }

    fn not(&mut self) -> Result<Expr, ExprError> {
        if self.is_word("not")? {
            let token = self.bump()?;
            self.nest(&token)?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Expr {
                start: token.start,
                end: inner.end,
                kind: ExprKind::Not(Box::new(inner)),
            });
        }
        self.compare()
    }

    fn operator(&mut self) -> Result<Option<Op>, ExprError> {
        Ok(match &self.peek()?.tok {
            Tok::Op(op) => Some(*op),
            Tok::Word(w) if w == "in" => Some(Op::In),
            _ => None,
        })
    }

    fn compare(&mut self) -> Result<Expr, ExprError> {
        let left = self.value()?;
        let Some(op) = self.operator()? else {
            return Ok(left);
        };
        let op_at = self.bump()?.start;
        let right = self.value()?;
        if self.operator()?.is_some() {
            let token = self.peek()?.clone();
            return Err(error(
                self.text(),
                token.start,
                format!("comparisons cannot be chained: unexpected `{}`", self.written(&token)),
                "compare one pair at a time and join the comparisons with `and`, e.g. `$.a > 1 and $.a < 10`",
            ));
        }
        Ok(Expr {
            start: left.start,
            end: right.end,
            kind: ExprKind::Compare(op, op_at, Box::new(left), Box::new(right)),
        })
    }

    /// The error for a token where a value was expected.
    fn expected_value(&self, token: &Token) -> ExprError {
        let after = self
            .prev
            .map(|(start, end)| format!(" after `{}`", shorten(&self.text()[start..end])));
        let message = match (&token.tok, after) {
            (Tok::End, Some(after)) => format!("expected a value{after}"),
            (Tok::End, None) => "the condition is empty".to_owned(),
            (_, after) => format!(
                "expected a value{}, found `{}`",
                after.unwrap_or_default(),
                self.written(token)
            ),
        };
        let hint = match &token.tok {
            Tok::Word(w) if w == "not" => {
                "put the negation in parentheses, e.g. `$.a == (not $.b)`".to_owned()
            }
            _ => VALUE_HINT.to_owned(),
        };
        error(self.text(), token.start, message, hint)
    }

    fn value(&mut self) -> Result<Expr, ExprError> {
        let token = self.peek()?.clone();
        let literal = |value: Value| ExprKind::Literal(value);
        let kind = match &token.tok {
            Tok::Path(path) => ExprKind::Path(path.clone()),
            Tok::Number(n) => literal(Value::Number(n.clone())),
            Tok::Str(s) => literal(Value::String(s.clone())),
            Tok::Word(w) if w == "true" => literal(Value::Bool(true)),
            Tok::Word(w) if w == "false" => literal(Value::Bool(false)),
            Tok::Word(w) if w == "null" => literal(Value::Null),
            Tok::Word(w) if w == "exists" => {
                let _ = self.bump()?;
                return self.exists(&token);
            }
            Tok::LParen => {
                let _ = self.bump()?;
                self.nest(&token)?;
                let inner = self.or()?;
                self.depth -= 1;
                let close = self.peek()?.clone();
                return match close.tok {
                    Tok::RParen => {
                        let _ = self.bump()?;
                        Ok(Expr {
                            start: token.start,
                            end: close.end,
                            kind: inner.kind,
                        })
                    }
                    Tok::End => Err(error(
                        self.text(),
                        token.start,
                        "unclosed `(`",
                        "add the matching `)`",
                    )),
                    _ => Err(self.trailing(&close)),
                };
            }
            Tok::LBracket => {
                let _ = self.bump()?;
                self.nest(&token)?;
                let list = self.list(&token);
                self.depth -= 1;
                return list;
            }
            _ => return Err(self.expected_value(&token)),
        };
        let _ = self.bump()?;
        Ok(Expr {
            start: token.start,
            end: token.end,
            kind,
        })
    }

    /// The rest of `exists(<path>)` after the keyword.
    fn exists(&mut self, keyword: &Token) -> Result<Expr, ExprError> {
        let hint = "write `exists($.coupon)`: `exists` takes one path in parentheses";
        let open = self.bump()?;
        if open.tok != Tok::LParen {
            return Err(error(
                self.text(),
                open.start,
                "expected `(` after `exists`",
                hint,
            ));
        }
        let argument = self.bump()?;
        let Tok::Path(path) = argument.tok else {
            let message = if argument.tok == Tok::End {
                "expected a path after `exists(`".to_owned()
            } else {
                format!("`exists` takes a path, found `{}`", self.written(&argument))
            };
            return Err(error(self.text(), argument.start, message, hint));
        };
        let close = self.bump()?;
        match close.tok {
            Tok::RParen => Ok(Expr {
                start: keyword.start,
                end: close.end,
                kind: ExprKind::Exists(path, argument.start),
            }),
            Tok::End => Err(error(
                self.text(),
                open.start,
                "unclosed `(` after `exists`",
                hint,
            )),
            _ => Err(error(
                self.text(),
                close.start,
                format!(
                    "expected `)` after the path, found `{}`",
                    self.written(&close)
                ),
                hint,
            )),
        }
    }

    /// The rest of a list after its `[`.
    fn list(&mut self, open: &Token) -> Result<Expr, ExprError> {
        let mut items = Vec::new();
        let unclosed = |parser: &Self| {
            error(
                parser.text(),
                open.start,
                "unclosed `[`",
                "close the list with `]`, e.g. `['FR', 'DE']`",
            )
        };
        if self.peek()?.tok == Tok::RBracket {
            let close = self.bump()?;
            return Ok(Expr {
                start: open.start,
                end: close.end,
                kind: ExprKind::List(items),
            });
        }
        loop {
            if self.peek()?.tok == Tok::End {
                return Err(unclosed(self));
            }
            items.push(self.value()?);
            let token = self.bump()?;
            match token.tok {
                Tok::Comma => {}
                Tok::RBracket => {
                    return Ok(Expr {
                        start: open.start,
                        end: token.end,
                        kind: ExprKind::List(items),
                    })
                }
                Tok::End => return Err(unclosed(self)),
                _ => {
                    return Err(error(
                        self.text(),
                        token.start,
                        format!(
                            "expected `,` or `]` in the list, found `{}`",
                            self.written(&token)
                        ),
                        "separate list items with commas, e.g. `['FR', 'DE']`",
                    ))
                }
            }
        }
    }

    /// The error for a token left over after a complete condition (or parenthesised one).
    fn trailing(&self, token: &Token) -> ExprError {
        let after = self
            .prev
            .map(|(start, end)| shorten(&self.text()[start..end]))
            .unwrap_or_default();
        let (message, hint) = match &token.tok {
            Tok::RParen => (
                "unexpected `)`".to_owned(),
                "remove it, or add the matching `(` before".to_owned(),
            ),
            Tok::Comma | Tok::RBracket => (
                format!("unexpected `{}`", self.written(token)),
                "write lists in brackets, e.g. `$.country in ['FR', 'DE']`".to_owned(),
            ),
            _ => (
                format!("unexpected `{}` after `{after}`", self.written(token)),
                COMPARE_HINT.to_owned(),
            ),
        };
        error(self.text(), token.start, message, hint)
    }
}

// ---------------------------------------------------------------------------------------------
// Checks of what the text alone shows to be wrong

struct Checker<'t> {
    text: &'t str,
}

impl Checker<'_> {
    /// An operand in boolean position (`and`, `or`, `not`, the whole condition).
    fn boolean(&self, expr: &Expr, operator: Option<&str>) -> Result<(), ExprError> {
        match expr.static_type() {
            None | Some(Type::Boolean | Type::Null) => Ok(()),
            Some(other) => {
                let written = shorten(expr.source(self.text));
                let (message, hint) = match operator {
                    None => (
                        format!(
                            "a condition must be true or false, but `{written}` is {}",
                            other.name()
                        ),
                        format!("compare it with something, e.g. `$.status == {written}`"),
                    ),
                    Some(op) => (
                        format!(
                            "`{op}` needs true or false, but `{written}` is {}",
                            other.name()
                        ),
                        BOOLEAN_HINT.to_owned(),
                    ),
                };
                Err(error(self.text, expr.start, message, hint))
            }
        }
    }

    fn check(&self, expr: &Expr) -> Result<(), ExprError> {
        match &expr.kind {
            ExprKind::Or(operands) | ExprKind::And(operands) => {
                let op = if matches!(expr.kind, ExprKind::Or(..)) {
                    "or"
                } else {
                    "and"
                };
                for operand in operands {
                    self.boolean(operand, Some(op))?;
                    self.check(operand)?;
                }
                Ok(())
            }
            ExprKind::Not(inner) => {
                self.boolean(inner, Some("not"))?;
                self.check(inner)
            }
            ExprKind::Compare(op, at, a, b) => {
                self.check(a)?;
                self.check(b)?;
                self.compare(*op, *at, a, b)
            }
            ExprKind::List(items) => items.iter().try_for_each(|item| self.check(item)),
            ExprKind::Path(_) | ExprKind::Exists(..) | ExprKind::Literal(_) => Ok(()),
        }
    }

    fn compare(&self, op: Op, at: usize, a: &Expr, b: &Expr) -> Result<(), ExprError> {
        let (left, right) = (a.static_type(), b.static_type());
        let whole = || shorten(&self.text[a.start..b.end]);
        let fail = |message: String, hint: &str| Err(error(self.text, at, message, hint));
        match op {
            Op::Eq | Op::Ne => match (left, right) {
                (Some(l), Some(r)) if l != r => fail(
                    format!(
                        "`{}` compares {} with {}, so it is always {}",
                        whole(),
                        l.name(),
                        r.name(),
                        if op == Op::Eq { "false" } else { "true" }
                    ),
                    "compare a path with a value, e.g. `$.country == 'FR'`, or values of the same type",
                ),
                _ => Ok(()),
            },
            Op::Lt | Op::Le | Op::Gt | Op::Ge => {
                let orderable = |t: Option<Type>| matches!(t, None | Some(Type::Number | Type::String));
                match (left, right) {
                    (Some(l), Some(r)) if l != r || !orderable(left) => fail(
                        format!("cannot compare {} with {}: `{}`", l.name(), r.name(), whole()),
                        ORDER_HINT,
                    ),
                    _ if !orderable(left) || !orderable(right) => {
                        let (side, t) = if orderable(left) { (b, right) } else { (a, left) };
                        fail(
                            format!(
                                "`{}` compares numbers or strings, but `{}` is {}",
                                op.symbol(),
                                shorten(side.source(self.text)),
                                t.map_or("unknown", Type::name)
                            ),
                            ORDER_HINT,
                        )
                    }
                    _ => Ok(()),
                }
            }
            Op::In => match (left, right) {
                (_, None | Some(Type::List)) => Ok(()),
                (None | Some(Type::String), Some(Type::String)) => Ok(()),
                (Some(l), Some(Type::String)) => fail(
                    format!("cannot look for {} in a string: `{}`", l.name(), whole()),
                    "`in` on a string finds text in text, e.g. `'VIP' in $.tags_text`",
                ),
                (_, Some(r)) => fail(
                    format!(
                        "`in` needs a list, a string or an object on its right, but `{}` is {}",
                        shorten(b.source(self.text)),
                        r.name()
                    ),
                    "write e.g. `$.country in ['FR', 'DE']`",
                ),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation

struct Eval<'a> {
    text: &'a str,
    context: &'a Value,
}

impl<'a> Eval<'a> {
    /// The value of a boolean-position operand: booleans, `null` as false.
    fn truth(&self, expr: &'a Expr) -> Result<bool, String> {
        match &expr.kind {
            ExprKind::Or(operands) => {
                for operand in operands {
                    if self.truth(operand)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            ExprKind::And(operands) => {
                for operand in operands {
                    if !self.truth(operand)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            ExprKind::Not(inner) => Ok(!self.truth(inner)?),
            _ => match self.value(expr)?.as_ref() {
                Value::Bool(b) => Ok(*b),
                Value::Null => Ok(false),
                _ => Err(format!(
                    "{}, not true or false",
                    self.describe(expr).unwrap_or_else(|| format!(
                        "`{}` is not a boolean",
                        shorten(expr.source(self.text))
                    ))
                )),
            },
        }
    }

    fn value(&self, expr: &'a Expr) -> Result<Cow<'a, Value>, String> {
        Ok(match &expr.kind {
            ExprKind::Path(path) => path
                .get(self.context)
                .map_or(Cow::Owned(Value::Null), Cow::Borrowed),
            ExprKind::Exists(path, _) => Cow::Owned(Value::Bool(path.get(self.context).is_some())),
            ExprKind::Literal(value) => Cow::Borrowed(value),
            ExprKind::List(items) => Cow::Owned(Value::Array(
                items
                    .iter()
                    .map(|item| self.value(item).map(Cow::into_owned))
                    .collect::<Result<_, _>>()?,
            )),
            ExprKind::Compare(op, _, a, b) => Cow::Owned(Value::Bool(self.compare(*op, a, b)?)),
            ExprKind::Or(..) | ExprKind::And(..) | ExprKind::Not(_) => {
                Cow::Owned(Value::Bool(self.truth(expr)?))
            }
        })
    }

    /// "`$.amount` is \"12\"" for an operand whose value the text does not show.
    fn describe(&self, expr: &Expr) -> Option<String> {
        let written = shorten(expr.source(self.text));
        match &expr.kind {
            ExprKind::Literal(_) => None,
            ExprKind::Path(path) => Some(match path.get(self.context) {
                None => format!("`{written}` is missing"),
                Some(value) => format!("`{written}` is {}", json_text(value)),
            }),
            _ => self
                .value(expr)
                .ok()
                .map(|value| format!("`{written}` is {}", json_text(&value))),
        }
    }

    /// The operand descriptions for a message, after a colon.
    fn details(&self, operands: &[&Expr]) -> String {
        let described: Vec<String> = operands.iter().filter_map(|e| self.describe(e)).collect();
        if described.is_empty() {
            String::new()
        } else {
            format!(": {}", described.join(" and "))
        }
    }

    fn compare(&self, op: Op, a: &'a Expr, b: &'a Expr) -> Result<bool, String> {
        let (left, right) = (self.value(a)?, self.value(b)?);
        let (left, right) = (left.as_ref(), right.as_ref());
        let ordering = |wanted: fn(Ordering) -> bool| -> Result<bool, String> {
            let ordering = match (left, right) {
                (Value::Number(x), Value::Number(y)) => number_cmp(x, y),
                (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
                _ => None,
            };
            ordering.map(wanted).ok_or_else(|| {
                format!(
                    "cannot compare {} with {}{}",
                    Type::of(left).name(),
                    Type::of(right).name(),
                    self.details(&[a, b])
                )
            })
        };
        match op {
            Op::Eq => Ok(json_eq(left, right)),
            Op::Ne => Ok(!json_eq(left, right)),
            Op::Lt => ordering(Ordering::is_lt),
            Op::Le => ordering(Ordering::is_le),
            Op::Gt => ordering(Ordering::is_gt),
            Op::Ge => ordering(Ordering::is_ge),
            Op::In => match (left, right) {
                (_, Value::Array(items)) => Ok(items.iter().any(|item| json_eq(left, item))),
                (Value::String(needle), Value::String(haystack)) => {
                    Ok(haystack.contains(needle.as_str()))
                }
                (Value::String(key), Value::Object(fields)) => Ok(fields.contains_key(key)),
                (_, Value::String(_) | Value::Object(_)) => Err(format!(
                    "cannot look for {} in {}{}",
                    Type::of(left).name(),
                    Type::of(right).name(),
                    self.details(&[a, b])
                )),
                _ => Err(format!(
                    "`in` needs a list, a string or an object on its right, found {}{}",
                    Type::of(right).name(),
                    self.details(&[b])
                )),
            },
        }
    }
}

/// A value as short JSON text.
fn json_text(value: &Value) -> String {
    shorten(&value.to_string())
}

/// Numbers by value: integers exactly, others as floating point.
fn number_cmp(x: &Number, y: &Number) -> Option<Ordering> {
    let integer = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (integer(x), integer(y)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => x.as_f64()?.partial_cmp(&y.as_f64()?),
    }
}

/// JSON equality, with numbers compared by value at any depth.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_cmp(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, x)| y.get(key).is_some_and(|y| json_eq(x, y)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn eval(text: &str, context: &Value) -> Result<bool, EvalError> {
        Condition::parse(text)
            .unwrap_or_else(|e| panic!("`{text}` does not parse: {e:?}"))
            .eval(context)
    }

    #[track_caller]
    fn holds(text: &str, context: &Value) {
        assert_eq!(eval(text, context), Ok(true), "{text} on {context}");
    }

    #[track_caller]
    fn fails(text: &str, context: &Value) {
        assert_eq!(eval(text, context), Ok(false), "{text} on {context}");
    }

    #[track_caller]
    fn eval_error(text: &str, context: &Value) -> String {
        match eval(text, context) {
            Err(error) => {
                assert_eq!(error.condition, text);
                error.message
            }
            Ok(value) => panic!("`{text}` evaluated to {value}"),
        }
    }

    /// The offset, message and hint of a text that must not parse.
    #[track_caller]
    fn parse_error(text: &str) -> (usize, String, String) {
        match Condition::parse(text) {
            Ok(condition) => panic!("`{text}` parsed: {condition:?}"),
            Err(ExprError {
                offset,
                message,
                hint,
            }) => (offset, message, hint),
        }
    }

    #[track_caller]
    fn rejects(text: &str, offset: usize, message: &str, hint: &str) {
        let (actual_offset, actual_message, actual_hint) = parse_error(text);
        assert_eq!(
            (actual_offset, actual_message.as_str()),
            (offset, message),
            "`{text}`: {actual_message} / {actual_hint}"
        );
        assert!(
            actual_hint.contains(hint),
            "`{text}`: hint `{actual_hint}` lacks `{hint}`"
        );
    }

    fn order() -> Value {
        json!({
            "amount": 120,
            "price": 99.5,
            "country": "FR",
            "customer": {"vip": true, "tags": ["new", "eu"], "name": "Ada Lovelace"},
            "coupon": null,
            "lines": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 1}],
            "flags": {"express": false},
            "text_amount": "12",
        })
    }

    #[test]
    fn comparisons_of_numbers_and_strings() {
        let c = order();
        holds("$.amount > 100", &c);
        holds("$.amount >= 120", &c);
        fails("$.amount < 120", &c);
        holds("$.amount <= 120.0", &c);
        holds("$.price < 100", &c);
        holds("$.amount == 120.0", &c);
        holds("120 == $.amount", &c);
        holds("$.amount != 121", &c);
        holds("$.lines.0.qty == 2", &c);
        holds("$.lines.1.sku == 'b'", &c);
        holds("$.country == \"FR\"", &c);
        holds("$.country < 'GB'", &c);
        fails("$.country > 'GB'", &c);
        holds("-5 < $.amount", &c);
        holds("$.price > -0.5", &c);
        holds("18446744073709551615 > 9223372036854775807", &json!({}));
        holds("-9223372036854775808 < 18446744073709551615", &json!({}));
    }

    #[test]
    fn equality_is_json_equality_with_numbers_by_value() {
        let c = json!({"a": [1, 2.0], "o": {"x": 2}, "p": {"x": 2.0}, "s": "1", "n": null});
        holds("$.a == [1.0, $.o.x]", &c);
        fails("$.a == [1]", &c);
        holds("$.o == $.p", &c);
        holds("$.s != 1", &c);
        holds("$.n == null", &c);
        holds("$.missing == null", &c);
        fails("$.n != null", &c);
        holds("$.o == $.o", &c);
        holds("$.o != $.a", &c);
        holds("[] == []", &c);
        holds("(1 < 2) == true", &c);
    }

    #[test]
    fn membership_in_lists_strings_and_objects() {
        let c = order();
        holds("$.country in ['FR', 'DE']", &c);
        fails("$.country in ['IT', 'DE']", &c);
        fails("$.country in []", &c);
        holds("'eu' in $.customer.tags", &c);
        holds("'Love' in $.customer.name", &c);
        fails("'love' in $.customer.name", &c);
        holds("'express' in $.flags", &c);
        fails("'slow' in $.flags", &c);
        holds("2.0 in [1, 2, 3]", &c);
        holds("$.amount in [$.price, 120]", &c);
        holds("null in [1, null]", &c);
    }

    #[test]
    fn boolean_operators_and_exists() {
        let c = order();
        holds("$.customer.vip", &c);
        holds("$.customer.vip and $.amount > 100", &c);
        fails("$.customer.vip and $.amount > 200", &c);
        holds("$.amount > 200 or $.country == 'FR'", &c);
        holds("not $.flags.express", &c);
        holds("not not $.customer.vip", &c);
        holds("exists($.coupon)", &c);
        fails("exists($.voucher)", &c);
        holds("not exists($.lines.2)", &c);
        holds("exists($)", &c);
        fails("$.coupon", &c);
        fails("$.nothing", &c);
        holds("not $.nothing", &c);
        holds("true", &c);
        fails("false", &c);
        fails("null", &c);
        // `and` binds tighter than `or`; parentheses regroup.
        holds("true or false and false", &c);
        fails("(true or false) and false", &c);
        holds("not false and true", &c);
        fails("not (false or true)", &c);
        holds("$.customer.vip != true or $.amount > 100", &c);
        holds("$.country=='FR'and$.amount>=120", &c);
    }

    #[test]
    fn long_chains_stay_flat() {
        let long = vec!["$.a == 1"; 5_000].join(" and ");
        let condition = Condition::parse(&long).unwrap();
        assert_eq!(condition.eval(&json!({"a": 1})), Ok(true));
        assert_eq!(condition.eval(&json!({"a": 2})), Ok(false));
        assert_eq!(condition.paths().len(), 5_000);
        let nested = format!("{}true{}", "(".repeat(32), ")".repeat(32));
        assert_eq!(
            Condition::parse(&nested).unwrap().eval(&json!({})),
            Ok(true)
        );
    }

    #[test]
    fn boolean_operators_short_circuit() {
        let c = order();
        // The right side would be an error: it is never evaluated.
        fails("false and $.country > 3", &c);
        holds("true or $.country > 3", &c);
        holds("exists($.amount) or $.amount", &c);
        fails("exists($.voucher) and $.voucher.code > 1", &c);
        assert!(eval("true and $.country > 3", &c).is_err());
    }

    #[test]
    fn evaluation_errors_say_what_was_compared_with_what() {
        let c = order();
        assert_eq!(
            eval_error("$.text_amount > 10", &c),
            "cannot compare a string with a number: `$.text_amount` is \"12\""
        );
        assert_eq!(
            eval_error("$.country < $.amount", &c),
            "cannot compare a string with a number: `$.country` is \"FR\" and `$.amount` is 120"
        );
        assert_eq!(
            eval_error("$.voucher >= 3", &c),
            "cannot compare null with a number: `$.voucher` is missing"
        );
        assert_eq!(
            eval_error("$.coupon >= 3", &c),
            "cannot compare null with a number: `$.coupon` is null"
        );
        assert_eq!(
            eval_error("$.customer.tags < 'x'", &c),
            "cannot compare a list with a string: `$.customer.tags` is [\"new\",\"eu\"]"
        );
        assert_eq!(
            eval_error("$.amount in $.country", &c),
            "cannot look for a number in a string: `$.amount` is 120 and `$.country` is \"FR\""
        );
        assert_eq!(
            eval_error("1 in $.flags", &c),
            "cannot look for a number in an object: `$.flags` is {\"express\":false}"
        );
        assert_eq!(
            eval_error("'a' in $.amount", &c),
            "`in` needs a list, a string or an object on its right, found a number: `$.amount` is 120"
        );
        assert_eq!(
            eval_error("'a' in $.voucher", &c),
            "`in` needs a list, a string or an object on its right, found null: `$.voucher` is missing"
        );
        assert_eq!(
            eval_error("$.country and true", &c),
            "`$.country` is \"FR\", not true or false"
        );
        assert_eq!(
            eval_error("not $.customer.tags", &c),
            "`$.customer.tags` is [\"new\",\"eu\"], not true or false"
        );
        assert_eq!(
            eval_error("$.amount", &c),
            "`$.amount` is 120, not true or false"
        );
        let error = eval("$.amount or false", &c).unwrap_err();
        assert_eq!(
            error.to_string(),
            "condition `$.amount or false`: `$.amount` is 120, not true or false"
        );
    }

    #[test]
    fn strings_take_both_quotes_and_escapes() {
        let c = json!({"s": "it's \"x\" \\ y"});
        holds(r#"$.s == 'it\'s "x" \\ y'"#, &c);
        holds(r#"$.s == "it's \"x\" \\ y""#, &c);
        holds("'' == ''", &c);
        holds("'z' < 'é'", &c);
    }

    #[test]
    fn paths_are_listed_in_source_order_with_offsets() {
        let condition =
            Condition::parse("$.a.b == 1 and exists($.c) or $.d in [$.e, 2] and not $").unwrap();
        let located: Vec<(usize, String)> = condition
            .located_paths()
            .into_iter()
            .map(|(offset, path)| (offset, path.to_string()))
            .collect();
        assert_eq!(
            located,
            [
                (0, "$.a.b".to_owned()),
                (22, "$.c".to_owned()),
                (30, "$.d".to_owned()),
                (38, "$.e".to_owned()),
                (54, "$".to_owned()),
            ]
        );
        assert_eq!(condition.paths().len(), 5);
        assert_eq!(
            Condition::parse("'é' == $.x").unwrap().located_paths()[0].0,
            7
        );
    }

    #[test]
    fn display_and_source_are_the_text() {
        let text = "$.amount  >  100";
        let condition = Condition::parse(text).unwrap();
        assert_eq!(condition.to_string(), text);
        assert_eq!(condition.source(), text);
        assert_eq!(condition, Condition::parse(text).unwrap());
        assert_ne!(condition, Condition::parse("$.amount > 100").unwrap());
    }

    #[test]
    fn syntax_errors_point_at_the_problem() {
        rejects("", 0, "the condition is empty", "$.amount > 100");
        rejects("   ", 0, "the condition is empty", "$.amount > 100");
        rejects(
            "$.amount ==",
            11,
            "expected a value after `==`",
            "a value is a path",
        );
        rejects(
            "$.amount == and",
            12,
            "expected a value after `==`, found `and`",
            "a value is a path",
        );
        rejects(
            "$.a == 1 or",
            11,
            "expected a value after `or`",
            "a value is a path",
        );
        rejects(
            ") == 1",
            0,
            "expected a value, found `)`",
            "a value is a path",
        );
        rejects(
            "$.a == not $.b",
            7,
            "expected a value after `==`, found `not`",
            "put the negation in parentheses",
        );
        rejects(
            "$.country == 'FR",
            13,
            "unclosed string",
            "end the string with '",
        );
        rejects("\"abc", 0, "unclosed string", "end the string with \"");
        rejects(
            r"$.a == 'x\n'",
            9,
            r"unknown escape `\n` in a string",
            "only escapes a quote",
        );
        rejects(
            "$.a == 1 adn $.b",
            9,
            "unknown word `adn`",
            "did you mean `and`?",
        );
        rejects(
            "$.a == 1 AND $.b",
            9,
            "unknown word `AND`",
            "keywords are lower case: write `and`",
        );
        rejects("ture", 0, "unknown word `ture`", "did you mean `true`?");
        rejects(
            "amount > 100",
            0,
            "unknown word `amount`",
            "read context values with a path, e.g. `$.amount`",
        );
        rejects(
            "$.amount 100",
            9,
            "unexpected `100` after `$.amount`",
            "write comparisons as `$.amount > 100`",
        );
        rejects(
            "$.a > 1 $.b > 2",
            8,
            "unexpected `$.b` after `1`",
            "join them with `and` or `or`",
        );
        rejects("$.a = 1", 4, "`=` is not an operator", "write `==`");
        rejects(
            "$.a => 1",
            4,
            "`=>` is not an operator",
            "did you mean `>=`?",
        );
        rejects(
            "$.a =< 1",
            4,
            "`=<` is not an operator",
            "did you mean `<=`?",
        );
        rejects(
            "$.a <> 1",
            4,
            "`<>` is not an operator",
            "did you mean `!=`?",
        );
        rejects("!$.a", 0, "`!` is not an operator", "write `not`");
        rejects("$.a && $.b", 4, "`&&` is not an operator", "write `and`");
        rejects("$.a || $.b", 4, "`||` is not an operator", "write `or`");
        rejects(
            "1 < $.a < 10",
            8,
            "comparisons cannot be chained: unexpected `<`",
            "`$.a > 1 and $.a < 10`",
        );
        rejects("($.a == 1", 0, "unclosed `(`", "add the matching `)`");
        rejects("$.a == 1)", 8, "unexpected `)`", "matching `(`");
        rejects(
            "($.a == 1 2)",
            10,
            "unexpected `2` after `1`",
            "write comparisons",
        );
        rejects(
            "$.a in ['FR', 'DE'",
            7,
            "unclosed `[`",
            "close the list with `]`",
        );
        rejects(
            "$.a in ['FR' 'DE']",
            13,
            "expected `,` or `]` in the list, found `'DE'`",
            "commas",
        );
        rejects(
            "$.a in ['FR',]",
            13,
            "expected a value after `,`, found `]`",
            "a value is a path",
        );
        rejects("$.a, $.b", 3, "unexpected `,`", "write lists in brackets");
        rejects(
            "exists $.a",
            7,
            "expected `(` after `exists`",
            "exists($.coupon)",
        );
        rejects(
            "exists('a')",
            7,
            "`exists` takes a path, found `'a'`",
            "exists($.coupon)",
        );
        rejects(
            "exists($.a",
            6,
            "unclosed `(` after `exists`",
            "exists($.coupon)",
        );
        rejects(
            "exists($.a $.b)",
            11,
            "expected `)` after the path, found `$.b`",
            "exists($.coupon)",
        );
        rejects(
            "$.a.",
            0,
            "invalid path: path `$.a.` has an empty segment",
            "paths look like",
        );
        rejects(
            "$a == 1",
            0,
            "invalid path: `$a` is not a path; paths are `$` or start with `$.`",
            "paths look like",
        );
        rejects(
            "$.lines[0].sku == 'a'",
            7,
            "unexpected `[` after the path `$.lines`",
            "`$.lines.0`",
        );
        rejects("$.a > 1.", 6, "invalid number `1.`", "digits on both sides");
        rejects(
            "$.a > 10s",
            6,
            "invalid number `10s`",
            "quote text, e.g. `'10s'`",
        );
        rejects("$.a > .5", 6, "invalid number `.5`", "`0.5`");
        rejects("$.a > - 1", 6, "unexpected `-`", "`-3`");
        rejects("$.a @ 1", 4, "unexpected character `@`", "paths (`$.a`)");
        rejects(
            &format!("{}$.a{}", "(".repeat(40), ")".repeat(40)),
            32,
            "the condition nests more than 32 levels deep",
            "fewer nested",
        );
        rejects(
            &format!("{}$.a", "not ".repeat(40)),
            128,
            "the condition nests more than 32 levels deep",
            "fewer nested",
        );
        // Offsets count characters, not bytes.
        rejects(
            "'é' ==",
            6,
            "expected a value after `==`",
            "a value is a path",
        );
    }

    #[test]
    fn mistakes_visible_in_the_text_are_refused() {
        rejects(
            "'a' < 3",
            4,
            "cannot compare a string with a number: `'a' < 3`",
            "two numbers or two strings",
        );
        rejects(
            "$.a > 1 and 'x' >= 2.5",
            16,
            "cannot compare a string with a number: `'x' >= 2.5`",
            "two numbers or two strings",
        );
        rejects(
            "true < false",
            5,
            "cannot compare a boolean with a boolean: `true < false`",
            "two numbers or two strings",
        );
        rejects(
            "$.a < true",
            4,
            "`<` compares numbers or strings, but `true` is a boolean",
            "two numbers or two strings",
        );
        rejects(
            "[1] > $.a",
            4,
            "`>` compares numbers or strings, but `[1]` is a list",
            "two numbers or two strings",
        );
        rejects(
            "'a' == 1",
            4,
            "`'a' == 1` compares a string with a number, so it is always false",
            "same type",
        );
        rejects(
            "(1 < 2) != 'yes'",
            8,
            "`(1 < 2) != 'yes'` compares a boolean with a string, so it is always true",
            "same type",
        );
        rejects(
            "$.a in 3",
            4,
            "`in` needs a list, a string or an object on its right, but `3` is a number",
            "['FR', 'DE']",
        );
        rejects(
            "3 in 'abc'",
            2,
            "cannot look for a number in a string: `3 in 'abc'`",
            "finds text in text",
        );
        rejects(
            "'yes'",
            0,
            "a condition must be true or false, but `'yes'` is a string",
            "`$.status == 'yes'`",
        );
        rejects(
            "$.a and 3",
            8,
            "`and` needs true or false, but `3` is a number",
            "compare the value first",
        );
        rejects(
            "not 'x' or $.b",
            4,
            "`not` needs true or false, but `'x'` is a string",
            "compare the value first",
        );
        rejects(
            "[$.a] or $.b",
            0,
            "`or` needs true or false, but `[$.a]` is a list",
            "compare the value first",
        );
        // The same in a nested list or parentheses.
        rejects(
            "$.a in [('a' < 1)]",
            13,
            "cannot compare a string with a number: `'a' < 1`",
            "two numbers",
        );
        // Paths may hold anything: these are left to evaluation.
        for text in [
            "$.a < 3",
            "$.a == 'x'",
            "'x' in $.a",
            "$.a in $.b",
            "$.a and $.b",
            "$.a == null",
            "null == null",
        ] {
            assert!(Condition::parse(text).is_ok(), "{text}");
        }
    }
}
