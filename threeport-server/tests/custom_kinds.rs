//! Kinds of one's own through a `threeport-server serve` process: a `KindDefinition`
//! registers `Certificate` with a JSON Schema and a reference field; its objects are served
//! by the generic handlers at once (validation errors name the field, filters, If-Match,
//! references and `?ref=`), the OpenAPI document includes it, an incompatible schema change
//! is refused naming the object it would break while an additive one is accepted, and a kind
//! with objects cannot be deleted.

mod common;

use reqwest::StatusCode;
use serde_json::{Value, json};

use common::process::{create, send, serve, temp_dir};

fn schema(minimum_size: u32) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["domain", "size"],
        "additionalProperties": false,
        "properties": {
            "domain": {"type": "string", "pattern": "^[a-z0-9.-]+$"},
            "size": {"type": "integer", "minimum": minimum_size},
            "runtime": {"type": "string"},
            "issuer": {"type": "object", "properties": {"name": {"type": "string"},
                                                        "key": {"type": "string"}}}
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_of_ones_own_is_served_validated_and_guarded() {
    let data = temp_dir();
    let server = serve(&data, &[]).await;
    let token = server.token.clone().unwrap();
    let http = common::http_client();
    let url = |path: &str| format!("{}/v0/{path}", server.base);
    let post = |path: &str, body: Value| {
        let request = http.post(url(path)).bearer_auth(&token).json(&body);
        send(request)
    };

    // Refused definitions: a built-in kind, a schema that is not one.
    let (status, body) = post(
        "kind-definitions",
        json!({"name": "mine", "spec": {"kind": "WorkloadDefinition", "schema": schema(1)}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "spec.kind");
    let (status, body) = post(
        "kind-definitions",
        json!({"name": "bad", "spec": {"kind": "Bad", "schema": {"type": "nope"}}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "spec.schema");

    let definition = create(
        &http,
        url("kind-definitions"),
        &token,
        json!({"name": "certificates", "spec": {"kind": "Certificate", "schema": schema(1),
               "references": {"runtime": "KubernetesRuntimeInstance"},
               "sealed_fields": ["issuer.key"]}}),
    )
    .await;

    // Served at once; bad objects refused naming the field.
    for (spec, field) in [
        (json!({"domain": "a.example.com", "size": 0}), "spec.size"),
        (json!({"domain": "A B", "size": 1}), "spec.domain"),
        (json!({"size": 1}), "spec"),
        (
            json!({"domain": "a.example.com", "size": 1, "extra": 1}),
            "spec",
        ),
        (
            json!({"domain": "a.example.com", "size": 1, "runtime": "nope"}),
            "spec.runtime",
        ),
    ] {
        let (status, body) = post("certificates", json!({"name": "c", "spec": spec})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{spec}: {body}");
        assert_eq!(body["field"], field, "{spec}: {body}");
    }
    let runtime_definition = create(
        &http,
        url("kubernetes-runtime-definitions"),
        &token,
        json!({"name": "k", "spec": {"infra_provider": "existing"}}),
    )
    .await;
    let _ = runtime_definition;
    let (status, body) = post(
        "certificates",
        json!({"name": "web", "spec": {"domain": "web.example.com", "size": 2,
               "runtime": "01a22e3e-3ad6-7453-830c-91d446dab8f2"}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a missing object: {body}");
    assert_eq!(body["field"], "spec.runtime", "{body}");
    let web = create(
        &http,
        url("certificates"),
        &token,
        json!({"name": "web", "labels": {"tier": "edge"},
               "spec": {"domain": "web.example.com", "size": 2,
                        "issuer": {"name": "ca", "key": "do-not-store-me"}}}),
    )
    .await;
    let (status, got) = send(
        http.get(url(&format!("certificates/{web}")))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["kind"], "Certificate");
    // The sealed field is stored encrypted, never as given.
    let sealed = got["spec"]["issuer"]["key"].as_str().unwrap_or_default();
    assert!(sealed.starts_with("sealed:v1:"), "{got}");
    assert_eq!(got["spec"]["issuer"]["name"], "ca");
    assert_eq!(got["references"][0]["field"], "$kind");
    assert_eq!(got["references"][0]["id"], definition.as_str());
    let (_, listed) = send(
        http.get(url("certificates?label=tier=edge"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
    // If-Match: a stale version is refused.
    let (status, _) = send(
        http.patch(url(&format!("certificates/{web}")))
            .bearer_auth(&token)
            .header("If-Match", "\"99\"")
            .json(&json!({"spec": {"size": 3}})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, patched) = send(
        http.patch(url(&format!("certificates/{web}")))
            .bearer_auth(&token)
            .json(&json!({"spec": {"size": 3}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["spec"]["size"], 3);

    // The OpenAPI document has it, with its schema.
    let (_, document) = send(http.get(format!("{}/openapi.json", server.base))).await;
    assert!(document["paths"]["/v0/certificates"]["post"].is_object());
    assert_eq!(
        document["components"]["schemas"]["CertificateObject"]["allOf"][1]["properties"]["spec"]["required"],
        json!(["domain", "size"])
    );

    // A schema change that would break an object is refused naming it; an additive one is
    // accepted and applies to the next request.
    let definition_url = url(&format!("kind-definitions/{definition}"));
    let (status, refused) = send(
        http.patch(&definition_url)
            .bearer_auth(&token)
            .json(&json!({"spec": {"schema": schema(5)}})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("Certificate web"),
        "{refused}"
    );
    let mut wider = schema(1);
    wider["properties"]["note"] = json!({"type": "string"});
    let (status, body) = send(
        http.patch(&definition_url)
            .bearer_auth(&token)
            .json(&json!({"spec": {"schema": wider}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = post(
        "certificates",
        json!({"name": "noted", "spec": {"domain": "n.example.com", "size": 1, "note": "new"}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Another definition cannot take the kind's name or place.
    let (status, body) = post(
        "kind-definitions",
        json!({"name": "certs2", "spec": {"kind": "Certificate", "plural": "certs", "schema": schema(1)}}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // A kind with objects cannot go.
    let (status, body) = send(http.delete(&definition_url).bearer_auth(&token)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("Certificate"),
        "{body}"
    );
}
