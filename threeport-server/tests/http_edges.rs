//! The edges of the HTTP API that the RFCs define and generated requests found: list filters
//! no object can match (NUL, not UTF-8, too many) are 400s naming the parameter on every
//! store; `If-Match: *`, weak and listed entity tags (RFC 9110); the `Authorization` scheme in
//! any case; `Idempotency-Key` on creates; YAML documents that are not resources.

mod common;

#[path = "../../threeport-store/tests/common/mod.rs"]
mod postgres;

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{Value, json};
use threeport_core::{MemoryBus, Store};
use threeport_server::auth::mint_token;
use threeport_server::{ApiState, Ops, Sealer, TokenSet, app, model};

const WEB: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n";

/// The whole API (every kind, tokens) on `store`; returns its base URL and a token.
async fn serve(store: Arc<dyn Store>) -> (String, String) {
    let minted = mint_token().unwrap();
    let mut tokens = TokenSet::new();
    tokens.add_hash(&minted.hash).unwrap();
    let state = ApiState {
        store,
        bus: Arc::new(MemoryBus::new()),
        locker: Arc::new(threeport_core::MemoryLocker::new()),
        kinds: Arc::new(model::registry()),
        sealer: Arc::new(Sealer::ephemeral().unwrap()),
    };
    let app = app(state, Some(Arc::new(tokens)), Ops::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), minted.token)
}

async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        headers,
    )
}

async fn all_edges(store: Arc<dyn Store>) {
    let (base, token) = serve(store).await;
    let http = common::http_client();
    let defs = format!("{base}/v0/workload-definitions");

    // Filters no object can match are the client's error, on every store.
    let many_labels: String = (0..17).map(|n| format!("&label=k{n}=v")).collect();
    for (query, field) in [
        ("name=a%00b", "name"),
        ("label=team%3Dweb%00", "label"),
        ("label=%00=x", "label"),
        ("name=%FF%FE", "name"),
        ("ref=definition=not-an-id", "ref"),
        (
            "ref=bad%20field=01890a5d-ac96-774b-bcce-b302099a8057",
            "ref",
        ),
        (&many_labels[1..], "label"),
        ("limit=0", "limit"),
        ("after=x", "after"),
    ] {
        let (status, err, _) = send(http.get(format!("{defs}?{query}")).bearer_auth(&token)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "?{query}: {err}");
        assert_eq!(err["field"], field, "?{query}: {err}");
    }

    // The scheme of Authorization is case-insensitive (RFC 9110 §11.1).
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let (status, _, _) = send(
            http.get(&defs)
                .header("Authorization", format!("{scheme} {token}")),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{scheme}");
    }
    let (status, _, headers) = send(http.get(&defs).header("Authorization", "Basic eA==")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.contains_key("www-authenticate"));

    // A document that is not a resource is refused at create, naming the document.
    let (status, err, _) = send(http.post(&defs).bearer_auth(&token).json(
        &json!({"name": "scalar", "spec": {"yaml_document": format!("{WEB}---\njust text\n")}}),
    ))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["field"], "spec.yaml_document");
    assert!(
        err["message"].as_str().unwrap().contains("document 1"),
        "{err}"
    );

    // Idempotency-Key: a repeat gets the first answer; another request with the key is refused.
    let body = json!({"name": "web", "spec": {"yaml_document": WEB}});
    let post = |body: &Value| {
        http.post(&defs)
            .bearer_auth(&token)
            .header("Idempotency-Key", "3f2b7d0e-key-1")
            .json(body)
    };
    let (status, first, headers) = send(post(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert!(!headers.contains_key("idempotent-replayed"));
    let (status, again, headers) = send(post(&body)).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "a repeat is answered as the first: {again}"
    );
    assert_eq!(again["id"], first["id"]);
    assert_eq!(headers["idempotent-replayed"], "true");
    let other = json!({"name": "other", "spec": {"yaml_document": WEB}});
    let (status, err, _) = send(post(&other)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["field"], "Idempotency-Key");
    let (status, err, _) = send(http.post(&defs).bearer_auth(&token).json(&body)).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "without a key, the name is taken: {err}"
    );
    let composite = json!({"name": "shop", "definition": {"yaml_document": WEB}});
    let workloads = |key: &str| {
        http.post(format!("{base}/v0/workloads"))
            .bearer_auth(&token)
            .header("Idempotency-Key", key)
            .json(&composite)
    };
    let (status, made, _) = send(workloads("composite-1")).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let (status, replayed, headers) = send(workloads("composite-1")).await;
    assert_eq!((status, &replayed), (StatusCode::CREATED, &made));
    assert_eq!(headers["idempotent-replayed"], "true");

    // If-Match (RFC 9110 §13.1.1): "*", listed tags, weak tags (never a strong match).
    let id = first["id"].as_str().unwrap();
    let object = format!("{defs}/{id}");
    let replace = |if_match: &str| {
        http.put(&object)
            .bearer_auth(&token)
            .header("If-Match", if_match)
            .json(&json!({"spec": {"yaml_document": WEB}}))
    };
    let (status, replaced, _) = send(replace("*")).await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    let version = replaced["version"].as_u64().unwrap();
    let (status, replaced, _) = send(replace(&format!("\"1\", \"{version}\""))).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "one of the listed versions: {replaced}"
    );
    let version = replaced["version"].as_u64().unwrap();
    let (status, err, _) = send(replace(&format!("W/\"{version}\""))).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a weak tag never matches: {err}"
    );
    let (status, err, _) = send(replace(&format!("\"{}\"", version + 5))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    let (status, err, _) = send(replace("")).await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("If-Match"))
    );
    let (status, err, _) = send(replace("\"v1\"")).await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("If-Match"))
    );
    let (status, _, _) = send(
        http.put(format!("{defs}/01890a5d-ac96-774b-bcce-b302099a8057"))
            .bearer_auth(&token)
            .header("If-Match", "*")
            .json(&json!({"spec": {"yaml_document": WEB}})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "\"*\" needs the object to exist"
    );
    let (status, _, _) = send(
        http.delete(&object)
            .bearer_auth(&token)
            .header("If-Match", "*"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn memory_store() {
    all_edges(Arc::new(threeport_core::MemoryStore::new())).await;
}

#[tokio::test]
async fn sqlite() {
    let sql = threeport_store::connect("sqlite::memory:", &Default::default())
        .await
        .unwrap();
    all_edges(sql.store).await;
}

#[tokio::test]
async fn postgres() {
    let url = postgres::fresh_postgres().await;
    let sql = threeport_store::connect(&url, &Default::default())
        .await
        .unwrap();
    all_edges(sql.store).await;
}
