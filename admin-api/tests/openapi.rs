//! The OpenAPI document is checked in (`admin-api/openapi.json`) so that API changes show in
//! review; this test fails when the document the code generates differs from it (SPEC U1).
//! `UPDATE_OPENAPI=1 cargo test --release -p admin-api --test openapi` rewrites the file. The
//! node's tests check that a running KMA serves the same document.

use std::path::PathBuf;

fn checked_in() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi.json")
}

#[test]
fn u1_the_generated_openapi_document_is_the_checked_in_one() {
    let generated = admin_api::routes::openapi_json(&admin_api::routes::openapi_document());
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(checked_in(), &generated).expect("write openapi.json");
    }
    let on_disk = std::fs::read_to_string(checked_in()).unwrap_or_default();
    assert!(
        on_disk == generated,
        "admin-api/openapi.json is out of date: run `UPDATE_OPENAPI=1 cargo test --release -p \
         admin-api --test openapi` and review the diff"
    );
}

#[test]
fn u1_every_operation_is_documented_with_its_error_shape() {
    let document = admin_api::routes::openapi_document();
    let mut operations = 0;
    for (path, item) in &document.paths.paths {
        let methods = [&item.get, &item.post, &item.put, &item.delete];
        for operation in methods.into_iter().flatten() {
            operations += 1;
            let tags = operation.tags.as_ref().map_or(0, Vec::len);
            assert!(tags > 0, "{path} has no tag");
            assert!(operation.responses.responses.contains_key("200"), "{path}: no 200 answer");
            assert!(
                operation.responses.responses.contains_key("default"),
                "{path}: the ErrorBody answer is not documented"
            );
        }
    }
    // Cluster 12, security 9, catalog 16, keys 8, records 5.
    assert!(operations >= 50, "only {operations} operations documented");
}

/// Expectation: the document lists every error code of the vocabulary, in its management
/// spelling, and the error body refers to that list (issue 15, point 3).
#[test]
fn t90_issue_15_the_error_codes_are_in_the_openapi_document() {
    let document = serde_json::to_value(admin_api::routes::openapi_document()).expect("JSON");
    let schemas = &document["components"]["schemas"];
    let listed: Vec<&str> = schemas["ErrorCode"]["enum"]
        .as_array()
        .expect("an enum of codes")
        .iter()
        .map(|code| code.as_str().expect("a string"))
        .collect();
    let codes: Vec<&str> = wire::ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
    assert_eq!(listed, codes);
    let code = &schemas["ErrorBody"]["properties"]["code"]["$ref"];
    assert_eq!(code, "#/components/schemas/ErrorCode");
}
