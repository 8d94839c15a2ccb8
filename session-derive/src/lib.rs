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

/// Implements `SessionData`: see `actix_kv_session::SessionData`.
#[proc_macro_derive(SessionData, attributes(session))]
pub fn derive_session_data(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
