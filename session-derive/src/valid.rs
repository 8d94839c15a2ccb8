//! Checks across fields and attributes.

use std::collections::HashMap;

use crate::{ast::Container, ctxt::Ctxt};

pub(crate) fn check(cx: &Ctxt, container: &Container<'_>) {
    check_generics(cx, container);
    check_combinations(cx, container);
    check_duplicate_keys(cx, container);
}

fn check_generics(cx: &Ctxt, container: &Container<'_>) {
    for lifetime in container.input.generics.lifetimes() {
        cx.error_spanned_by(
            lifetime,
            "`SessionData` cannot be derived for structs with lifetime parameters: session values are owned",
        );
    }
}

fn check_combinations(cx: &Ctxt, container: &Container<'_>) {
    for field in container.fields.iter().filter(|field| field.attrs.skip) {
        if let Some(key) = &field.attrs.key {
            cx.error_spanned_by(
                key,
                "`skip` and `key` cannot be used together: a skipped field is not stored",
            );
        }
        if let Some((_, default)) = &field.attrs.default {
            cx.syn_error(syn::Error::new(
                *default,
                "`skip` and `default` cannot be used together: a skipped field always takes `Default::default()`",
            ));
        }
    }
}

fn check_duplicate_keys(cx: &Ctxt, container: &Container<'_>) {
    let mut seen: HashMap<String, &syn::Ident> = HashMap::new();
    for field in &container.fields {
        let Some(key) = field.key(&container.attrs) else {
            continue;
        };
        if let Some(first) = seen.get(&key) {
            let span_on: &dyn quote::ToTokens = match &field.attrs.key {
                Some(lit) => lit,
                None => field.ident,
            };
            cx.error_spanned_by(
                span_on,
                format!("duplicate session key `{key}`: field `{first}` is stored under it too"),
            );
        } else {
            seen.insert(key, field.ident);
        }
    }
}
