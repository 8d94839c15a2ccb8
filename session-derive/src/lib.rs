//! `#[derive(SessionData)]` for `actix-kv-session`.
//!
//! Depend on `actix-kv-session` (feature `derive`, on by default), which re-exports this
//! derive and documents its attributes; the generated code names that crate's paths.

mod ast;
mod attr;
mod ctxt;
mod expand;
mod valid;

use proc_macro::TokenStream;
use syn::{parse_macro_input, DeriveInput};

// rustdoc appends this to the re-export's docs on `actix_kv_session`'s page: the blank line
// first keeps it a paragraph of its own there.
///
/// The generated code names paths of `actix_kv_session`: use this derive through that
/// crate's re-export, `actix_kv_session::SessionData` (feature `derive`), not on its own.
#[proc_macro_derive(SessionData, attributes(session))]
pub fn derive_session_data(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
