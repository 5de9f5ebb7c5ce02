//! Diagnostics: byte spans to lines and columns, and the one way errors
//! about the file are built (`file:line: [context: ]key: message`).

use std::fmt::Display;
use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use crate::error::{Error, Location};

/// The file being validated, for naming places in it.
pub(super) struct Diagnostics<'a> {
    src: &'a str,
    /// Where each line of `src` starts ([`line_starts`]).
    line_starts: Vec<usize>,
    path: &'a Path,
}

impl<'a> Diagnostics<'a> {
    pub(super) fn new(src: &'a str, path: &'a Path) -> Diagnostics<'a> {
        Diagnostics {
            src,
            line_starts: line_starts(src),
            path,
        }
    }

    /// The directory of the file: relative paths in it are relative to it.
    pub(super) fn base(&self) -> &'a Path {
        self.path.parent().unwrap_or(Path::new(""))
    }

    /// The 1-based line `span` starts on.
    pub(super) fn line(&self, span: &Range<usize>) -> usize {
        let offset = span.start.min(self.src.len());
        self.line_starts.partition_point(|start| *start <= offset)
    }

    /// The place `span` of the table `ctx` (empty at the top level) where
    /// `key` (empty for the table itself) is written.
    pub(super) fn at<'d>(&'d self, span: Range<usize>, ctx: &'d str, key: &'d str) -> Where<'d> {
        Where {
            diag: self,
            span,
            ctx,
            key,
        }
    }

    /// The place of the value `v` of `key` in the table `ctx`.
    pub(super) fn of<'d, T>(&'d self, v: &Spanned<T>, ctx: &'d str, key: &'d str) -> Where<'d> {
        self.at(v.span(), ctx, key)
    }
}

/// Where in the file a value is: its span, the table it is in and its key.
/// Errors about the value are made here.
pub(super) struct Where<'d> {
    diag: &'d Diagnostics<'d>,
    span: Range<usize>,
    ctx: &'d str,
    key: &'d str,
}

impl Where<'_> {
    /// The line the value starts on.
    pub(super) fn line(&self) -> usize {
        self.diag.line(&self.span)
    }

    /// `file:line: [ctx: ][key: ]message`.
    pub(super) fn err(&self, msg: impl Display) -> Error {
        let mut message = String::new();
        for part in [self.ctx, self.key] {
            if !part.is_empty() {
                message.push_str(part);
                message.push_str(": ");
            }
        }
        message.push_str(&msg.to_string());
        Error::Config {
            location: Location {
                path: self.diag.path.to_path_buf(),
                line: Some(self.line()),
                col: None,
            },
            message,
        }
    }
}

/// Byte offsets where the lines of `src` start, so that a line number is a
/// binary search instead of a rescan of the file (a file with many VHIDs
/// asks for two or so per VHID).
pub(super) fn line_starts(src: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(src.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

/// 1-based line and column of a byte offset.
pub(super) fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before
        .get(line_start..)
        .map_or(1, |s| s.chars().count() + 1);
    (line, col)
}

/// The key whose value starts at `offset`: the name just before the last `=`
/// on that line, if there is one (also inside inline tables).
pub(super) fn key_at(src: &str, offset: usize) -> Option<&str> {
    let before = src.get(..offset.min(src.len()))?;
    let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
    let lhs = line[..line.rfind('=')?].trim_end();
    // after the last character that cannot be part of a key (which may be
    // several bytes long: slice after all of it)
    let start = lhs
        .char_indices()
        .rev()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '"' | '\'' | '.')))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let key = lhs[start..].trim_matches(|c| c == '"' || c == '\'');
    (!key.is_empty()).then_some(key)
}

/// A TOML syntax or type error as `file:line:col: [key: ]message`.
pub(super) fn parse_error(src: &str, path: &Path, e: &toml::de::Error) -> Error {
    let Some(span) = e.span() else {
        return Error::Config {
            location: Location {
                path: path.to_path_buf(),
                line: None,
                col: None,
            },
            message: e.message().to_string(),
        };
    };
    let (line, col) = line_col(src, span.start);
    // Integers are read as i64 to range-check them with a clear message;
    // name the kind of value, not the Rust type.
    let text = e.message().replace("expected i64", "expected an integer");
    let key = key_at(src, span.start);
    let text = match key {
        Some(key) if key.rsplit('.').next() == Some("password") => without_value(&text),
        _ => text,
    };
    let message = match key {
        // Unknown/missing field messages already quote the key.
        Some(key) if !text.contains(&format!("`{key}`")) => format!("{key}: {text}"),
        _ => text,
    };
    Error::Config {
        location: Location {
            path: path.to_path_buf(),
            line: Some(line),
            col: Some(col),
        },
        message,
    }
}

/// A type error without the value it quotes: serde writes "invalid type:
/// integer `123456`, expected a string", and for `password` that value is
/// the secret.
pub(super) fn without_value(text: &str) -> String {
    let Some((found, expected)) = text.split_once(", expected") else {
        return text.to_string();
    };
    match found.find(['`', '"', '\'']) {
        Some(quote) => format!("{}, expected{expected}", found[..quote].trim_end()),
        None => text.to_string(),
    }
}
