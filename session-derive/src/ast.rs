//! A typed form of the input, keeping the `syn` nodes for spans.

use syn::{Data, DeriveInput, Fields, GenericArgument, PathArguments, Type};

use crate::{
    attr::{ContainerAttrs, FieldAttrs},
    ctxt::Ctxt,
};

pub(crate) struct Container<'a> {
    pub(crate) input: &'a DeriveInput,
    pub(crate) attrs: ContainerAttrs,
    pub(crate) fields: Vec<Field<'a>>,
}

pub(crate) struct Field<'a> {
    pub(crate) original: &'a syn::Field,
    pub(crate) ident: &'a syn::Ident,
    pub(crate) attrs: FieldAttrs,
    /// The inner type of an `Option<T>` field.
    pub(crate) option_of: Option<&'a Type>,
}

impl Field<'_> {
    /// The key the field is stored under, prefix included; `None` for skipped fields.
    pub(crate) fn key(&self, container: &ContainerAttrs) -> Option<String> {
        if self.attrs.skip {
            return None;
        }
        let name = self.ident.to_string();
        let name = name.strip_prefix("r#").unwrap_or(&name);
        let key = match (&self.attrs.key, &container.rename_all) {
            (Some(key), _) => key.value(),
            (None, Some((rule, _))) => rule.apply(name),
            (None, None) => name.to_owned(),
        };
        let prefix = container
            .prefix
            .as_ref()
            .map(syn::LitStr::value)
            .unwrap_or_default();
        Some(prefix + &key)
    }
}

impl<'a> Container<'a> {
    /// The struct's form, or `None` (with errors in `cx`) when it is not a struct with named
    /// fields.
    pub(crate) fn from_ast(cx: &Ctxt, input: &'a DeriveInput) -> Option<Self> {
        let attrs = ContainerAttrs::parse(cx, &input.attrs);
        let message = "`SessionData` can only be derived for structs with named fields";
        let named = match &input.data {
            Data::Struct(data) => match &data.fields {
                Fields::Named(named) => named,
                Fields::Unnamed(_) => {
                    cx.error_spanned_by(&input.ident, format!("{message}, not tuple structs"));
                    return None;
                }
                Fields::Unit => {
                    cx.error_spanned_by(&input.ident, format!("{message}, not unit structs"));
                    return None;
                }
            },
            Data::Enum(data) => {
                cx.error_spanned_by(data.enum_token, format!("{message}, not enums"));
                return None;
            }
            Data::Union(data) => {
                cx.error_spanned_by(data.union_token, format!("{message}, not unions"));
                return None;
            }
        };
        let fields = named
            .named
            .iter()
            .map(|field| Field {
                original: field,
                ident: field.ident.as_ref().expect("named fields have names"),
                attrs: FieldAttrs::parse(cx, &field.attrs),
                option_of: option_inner(&field.ty),
            })
            .collect();
        Some(Self {
            input,
            attrs,
            fields,
        })
    }
}

/// `T` when `ty` is written `Option<T>` (or with a `std::option::` / `core::option::` path).
fn option_inner(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else { return None };
    if path.qself.is_some() {
        return None;
    }
    let segments: Vec<_> = path
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    let is_option = match segments.as_slice() {
        [only] => only == "Option",
        [first, second, third] => {
            (first == "std" || first == "core") && second == "option" && third == "Option"
        }
        _ => false,
    };
    if !is_option {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &path.path.segments.last()?.arguments else {
        return None;
    };
    match args.args.first()? {
        GenericArgument::Type(inner) if args.args.len() == 1 => Some(inner),
        _ => None,
    }
}
