//! Compile errors of `#[derive(SessionData)]`: one file per diagnostic under `tests/ui/`.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
