//! The `#[session(...)]` attributes.

use proc_macro2::Span;
use syn::{spanned::Spanned, Attribute, ExprPath, LitStr};

use crate::ctxt::Ctxt;

pub(crate) const SESSION: &str = "session";
pub(crate) const KEY: &str = "key";
pub(crate) const PREFIX: &str = "prefix";
pub(crate) const RENAME_ALL: &str = "rename_all";
pub(crate) const SKIP: &str = "skip";
pub(crate) const DEFAULT: &str = "default";

/// Attributes on the struct.
#[derive(Default)]
pub(crate) struct ContainerAttrs {
    pub(crate) prefix: Option<LitStr>,
    pub(crate) rename_all: Option<(RenameRule, LitStr)>,
}

/// Attributes on a field.
#[derive(Default)]
pub(crate) struct FieldAttrs {
    pub(crate) key: Option<LitStr>,
    pub(crate) skip: bool,
    /// `default`, with the function's path for `default = "path"`, and where it is written.
    pub(crate) default: Option<(Option<ExprPath>, Span)>,
}

/// How `rename_all` turns a field name into a key.
#[derive(Clone, Copy)]
pub(crate) enum RenameRule {
    Lower,
    Upper,
    Camel,
    Pascal,
    Snake,
    ScreamingSnake,
    Kebab,
    ScreamingKebab,
}

impl RenameRule {
    const ALL: [(&'static str, Self); 8] = [
        ("lowercase", Self::Lower),
        ("UPPERCASE", Self::Upper),
        ("camelCase", Self::Camel),
        ("PascalCase", Self::Pascal),
        ("snake_case", Self::Snake),
        ("SCREAMING_SNAKE_CASE", Self::ScreamingSnake),
        ("kebab-case", Self::Kebab),
        ("SCREAMING-KEBAB-CASE", Self::ScreamingKebab),
    ];

    fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, rule)| *rule)
    }

    /// Applies the rule to a `snake_case` field name.
    pub(crate) fn apply(self, field: &str) -> String {
        let words = field.split('_').filter(|w| !w.is_empty());
        let capitalized = |w: &str| {
            let mut chars = w.chars();
            chars
                .next()
                .map_or_else(String::new, |c| c.to_uppercase().chain(chars).collect())
        };
        match self {
            Self::Lower => field.replace('_', "").to_lowercase(),
            Self::Upper => field.replace('_', "").to_uppercase(),
            Self::Snake => field.to_owned(),
            Self::ScreamingSnake => field.to_uppercase(),
            Self::Kebab => field.replace('_', "-"),
            Self::ScreamingKebab => field.replace('_', "-").to_uppercase(),
            Self::Pascal => words.map(capitalized).collect(),
            Self::Camel => {
                let mut out = String::new();
                for (i, word) in words.enumerate() {
                    if i == 0 {
                        out.push_str(word);
                    } else {
                        out.push_str(&capitalized(word));
                    }
                }
                out
            }
        }
    }
}

/// Records `value` in `slot`, or a duplicate-attribute error.
fn set_once<T>(cx: &Ctxt, slot: &mut Option<T>, value: T, path: &syn::Path, name: &str) {
    if slot.is_some() {
        duplicate(cx, path, name);
    } else {
        *slot = Some(value);
    }
}

/// Records a flag in `slot`, or a duplicate-attribute error.
fn set_flag_once(cx: &Ctxt, slot: &mut bool, path: &syn::Path, name: &str) {
    if *slot {
        duplicate(cx, path, name);
    }
    *slot = true;
}

fn duplicate(cx: &Ctxt, path: &syn::Path, name: &str) {
    cx.error_spanned_by(path, format!("duplicate session attribute `{name}`"));
}

fn session_attrs(attrs: &[Attribute]) -> impl Iterator<Item = &Attribute> {
    attrs.iter().filter(|attr| attr.path().is_ident(SESSION))
}

impl ContainerAttrs {
    pub(crate) fn parse(cx: &Ctxt, attrs: &[Attribute]) -> Self {
        let mut out = Self::default();
        for attr in session_attrs(attrs) {
            let parsed = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident(PREFIX) {
                    let lit: LitStr = meta.value()?.parse()?;
                    set_once(cx, &mut out.prefix, lit, &meta.path, PREFIX);
                } else if meta.path.is_ident(RENAME_ALL) {
                    let lit: LitStr = meta.value()?.parse()?;
                    if let Some(rule) = RenameRule::parse(&lit.value()) {
                        set_once(cx, &mut out.rename_all, (rule, lit), &meta.path, RENAME_ALL);
                    } else {
                        let names: Vec<_> = RenameRule::ALL
                            .iter()
                            .map(|(n, _)| format!("`{n}`"))
                            .collect();
                        let message = format!(
                            "unknown rename rule `{}`: expected one of {}",
                            lit.value(),
                            names.join(", ")
                        );
                        cx.error_spanned_by(&lit, message);
                    }
                } else {
                    unknown(cx, &meta.path, "on a struct", &[PREFIX, RENAME_ALL]);
                    skip_value(&meta)?;
                }
                Ok(())
            });
            if let Err(err) = parsed {
                cx.syn_error(err);
            }
        }
        out
    }
}

impl FieldAttrs {
    pub(crate) fn parse(cx: &Ctxt, attrs: &[Attribute]) -> Self {
        let mut out = Self::default();
        for attr in session_attrs(attrs) {
            let parsed = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident(KEY) {
                    let lit: LitStr = meta.value()?.parse()?;
                    if lit.value().is_empty() {
                        cx.error_spanned_by(&lit, "session key must not be empty");
                    }
                    set_once(cx, &mut out.key, lit, &meta.path, KEY);
                } else if meta.path.is_ident(SKIP) {
                    set_flag_once(cx, &mut out.skip, &meta.path, SKIP);
                } else if meta.path.is_ident(DEFAULT) {
                    let function = if meta.input.peek(syn::Token![=]) {
                        let lit: LitStr = meta.value()?.parse()?;
                        Some(lit.parse::<ExprPath>()?)
                    } else {
                        None
                    };
                    set_once(
                        cx,
                        &mut out.default,
                        (function, meta.path.span()),
                        &meta.path,
                        DEFAULT,
                    );
                } else {
                    unknown(cx, &meta.path, "on a field", &[KEY, SKIP, DEFAULT]);
                    skip_value(&meta)?;
                }
                Ok(())
            });
            if let Err(err) = parsed {
                cx.syn_error(err);
            }
        }
        out
    }
}

fn unknown(cx: &Ctxt, path: &syn::Path, place: &str, expected: &[&str]) {
    let name = path
        .get_ident()
        .map_or_else(|| quote::quote!(#path).to_string(), ToString::to_string);
    let mut names: Vec<_> = expected.iter().map(|e| format!("`{e}`")).collect();
    let last = names.pop().unwrap_or_default();
    let expected = if names.is_empty() {
        last
    } else {
        format!("{} or {last}", names.join(", "))
    };
    cx.error_spanned_by(
        path,
        format!("unknown session attribute `{name}` {place}: expected {expected}"),
    );
}

/// Consumes `= value` after an unknown attribute, so parsing can go on to the next one.
fn skip_value(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        meta.value()?.parse::<syn::Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.parse_nested_meta(|nested| skip_value(&nested))?;
    }
    Ok(())
}
