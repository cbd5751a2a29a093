//! What the property-based check in e2e/schema (schemathesis against
//! /api/openapi.json) found, pinned down here: a method a path does not have
//! is 405 with an `Allow` header that lists what the document lists, before
//! any dev-mode guard; a JSON `null` is a body the document allows for
//! creating a document; the served document says what dev mode changes and
//! declares the dev-mode guard's 403 and 415.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use crate::common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

const KEY: &str = "test-admin-key";
const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

async fn document(app: &TestApp) -> Value {
    let resp = reqwest::get(app.http("/api/openapi.json")).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// The methods the document lists for `path`, upper-case.
fn listed(doc: &Value, path: &str) -> BTreeSet<String> {
    let item = doc["paths"][path].as_object().unwrap();
    METHODS
        .iter()
        .filter(|m| item.contains_key(**m))
        .map(|m| m.to_uppercase())
        .collect()
}

async fn undeclared_methods_are_405_with_allow(app: &TestApp, key: Option<&str>) {
    let doc = document(app).await;
    let paths: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    assert!(paths.len() >= 15, "{paths:?}");
    for path in paths {
        let allowed = listed(&doc, &path);
        let concrete = path
            .replace("{id}", "x")
            .replace("{doc}", "x")
            .replace("{delivery}", "y");
        for method in ["PUT", "PATCH", "DELETE", "POST", "TRACE"] {
            if allowed.contains(method) {
                continue;
            }
            // A foreign origin and no body type: the dev-mode guard would
            // refuse those (403, 415) on a route that has the method.
            let mut req = reqwest::Client::new()
                .request(method.parse().unwrap(), app.http(&concrete))
                .header("origin", "https://elsewhere.example");
            if let Some(key) = key {
                req = req.bearer_auth(key);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 405, "{method} {concrete}");
            let allow: BTreeSet<String> = resp.headers()["allow"]
                .to_str()
                .unwrap()
                .split(',')
                .map(|m| m.trim().to_string())
                .collect();
            assert_eq!(allow, allowed, "Allow of {method} {concrete}");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["code"], "method_not_allowed");
        }
    }
}

#[actix_web::test]
async fn methods_a_path_lacks_are_405_with_the_documented_allow() {
    let app = spawn_app(&["--api-key", KEY]).await;
    undeclared_methods_are_405_with_allow(&app, Some(KEY)).await;
    let dev = spawn_app(&[]).await;
    undeclared_methods_are_405_with_allow(&dev, None).await;
}

#[actix_web::test]
async fn a_null_body_creates_a_document_with_a_generated_name() {
    let app = spawn_app(&[]).await;
    let resp = reqwest::Client::new()
        .post(app.http("/api/docs"))
        .header("content-type", "application/json")
        .body("null")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let info: Value = resp.json().await.unwrap();
    assert_eq!(info["id"].as_str().unwrap().len(), 36, "{info}");
}

#[actix_web::test]
async fn the_document_declares_auth_and_the_dev_mode_guard() {
    let keyed = document(&spawn_app(&["--api-key", KEY]).await).await;
    let dev = document(&spawn_app(&[]).await).await;
    assert!(keyed["security"].is_array(), "the API key is required");
    assert!(dev["security"].is_null(), "dev mode needs no API key");
    for (path, item) in keyed["paths"].as_object().unwrap() {
        for method in ["post", "put", "patch", "delete"] {
            let Some(op) = item.get(method) else { continue };
            if !path.starts_with("/api/") {
                continue;
            }
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.contains_key("401"), "{method} {path}: 401");
            assert!(responses.contains_key("403"), "{method} {path}: 403");
            assert_eq!(
                responses["403"]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody"
            );
            if method != "delete" {
                assert!(responses.contains_key("415"), "{method} {path}: 415");
                assert!(
                    op["requestBody"]["content"].is_object(),
                    "{method} {path}: body"
                );
                assert_eq!(
                    dev["paths"][path][method]["requestBody"]["required"], true,
                    "dev mode: {method} {path} needs its body"
                );
            }
        }
    }
}
