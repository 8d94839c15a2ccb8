//! Generates the `SessionData` impl.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::{spanned::Spanned, DeriveInput};

use crate::{ast::Container, ctxt::Ctxt, valid};

pub(crate) fn derive(input: &DeriveInput) -> syn::Result<TokenStream> {
    let cx = Ctxt::default();
    let container = Container::from_ast(&cx, input);
    if let Some(container) = &container {
        valid::check(&cx, container);
    }
    cx.check()?;
    let container = container.expect("no errors means the struct was read");
    Ok(expand(&container))
}

fn expand(container: &Container<'_>) -> TokenStream {
    let ident = &container.input.ident;
    // The runtime's hidden, versioned module: its name changes with the protocol, so a
    // runtime that does not speak this one is a compile error on this path.
    let private = quote!(::actix_kv_session::__private_v1);
    let mut generics = container.input.generics.clone();
    {
        let where_clause = generics.make_where_clause();
        for param in container.input.generics.type_params() {
            let name = &param.ident;
            where_clause.predicates.push(syn::parse_quote!(
                #name: #private::serde::Serialize + #private::serde::de::DeserializeOwned
            ));
        }
    }
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();

    let mut keys = Vec::new();
    let mut reads = Vec::new();
    let mut writes = Vec::new();
    for field in &container.fields {
        let name = field.ident;
        let span = field.original.ty.span();
        let Some(key) = field.key(&container.attrs) else {
            reads.push(quote_spanned!(span=> #name: ::core::default::Default::default()));
            continue;
        };
        keys.push(key.clone());
        let (read, write) = match (field.option_of, &field.attrs.default) {
            (Some(_), _) => (
                quote_spanned!(span=> __reader.optional(#key)?),
                quote!(__writer.optional(#key, &self.#name);),
            ),
            (None, Some((Some(function), _))) => (
                quote_spanned!(span=> __reader.or_else(#key, #function)?),
                quote!(__writer.value(#key, &self.#name);),
            ),
            (None, Some((None, _))) => (
                quote_spanned!(span=> __reader.or_else(#key, ::core::default::Default::default)?),
                quote!(__writer.value(#key, &self.#name);),
            ),
            (None, None) => (
                quote_spanned!(span=> __reader.required(#key)?),
                quote!(__writer.value(#key, &self.#name);),
            ),
        };
        reads.push(quote!(#name: #read));
        writes.push(write);
    }

    quote! {
        #[automatically_derived]
        impl #impl_generics ::actix_kv_session::SessionData for #ident #ty_generics #where_clause {
            const KEYS: &'static [&'static str] = &[#(#keys),*];

            fn read_from(
                __reader: &mut #private::Reader<'_>,
            ) -> ::core::result::Result<Self, ::actix_kv_session::TypedError> {
                ::core::result::Result::Ok(Self { #(#reads),* })
            }

            fn write_to(&self, __writer: &mut #private::Writer<'_>) {
                #(#writes)*
            }
        }
    }
}
